-- KEYS: the order's delivery record, its partition's stream. ARGV: order id, a new assignment id,
-- driver, the delivery service's consumer group. Assigns an accepted, undelivered, uncanceled
-- order (also no ORDER_CANCELED the group has not applied yet) to the driver, replacing its open
-- assignment, and appends DRIVER_ASSIGNED naming the replaced one. Returns {'ASSIGNED'},
-- {'NOT_FOUND'}, {'NOT_ACCEPTED', the order's status}, {'DELIVERED'}, {'CANCELED'} or
-- {'BEHIND'}; only the first changes anything.
local key, stream = KEYS[1], KEYS[2]
local order, assignment, driver, group = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local fields = redis.call('HMGET', key, 'accepted', 'order_status', 'assignment', 'driver', 'assignment_status', 'restaurant', 'customer')
if fields[2] == Status.CANCELED then return {'CANCELED'} end
if not fields[1] then
    if not fields[2] then return {'NOT_FOUND'} end
    return {'NOT_ACCEPTED', fields[2]}
end
if fields[5] == Stage.DELIVERED then return {'DELIVERED'} end
local canceled = unappliedEventOf(stream, group, order, Kind.ORDER_CANCELED)
if canceled == BEHIND then return {'BEHIND'} end
if canceled then return {'CANCELED'} end
local previousDriver, previous = '', ''
if fields[3] and fields[5] ~= Stage.FAILED then previousDriver, previous = fields[4], fields[3] end
redis.call('HSET', key, 'assignment', assignment, 'driver', driver, 'assignment_status', Stage.ASSIGNED)
emit(stream, Kind.DRIVER_ASSIGNED, order, driver, {Field.driver, driver, Field.assignment, assignment,
    Field.restaurant, fields[6] or '', Field.customer, fields[7] or '',
    Field.previousDriver, previousDriver, Field.previousAssignment, previous})
return {'ASSIGNED'}
