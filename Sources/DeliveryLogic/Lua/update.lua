-- KEYS: the order's delivery record, its partition's stream. ARGV: order id, new stage, the
-- delivery service's consumer group. Moves the order's current assignment to the stage
-- (DELIVERED is final) and appends DELIVERY_STATUS, unless the order was canceled: also by an
-- ORDER_CANCELED the group has not applied yet, so a driver's change racing a cancel loses.
-- A FAILED assignment is over too: the order needs a new one (AssignDriver). Returns {'UPDATED'},
-- {'NO_ASSIGNMENT'}, {'DELIVERED'} (already: nothing changed), {'FAILED'}, {'CANCELED'} or
-- {'BEHIND'} (too many unapplied events to look through).
local key, stream = KEYS[1], KEYS[2]
local order, stage, group = ARGV[1], ARGV[2], ARGV[3]
local fields = redis.call('HMGET', key, 'assignment', 'driver', 'assignment_status', 'restaurant', 'customer', 'order_status')
if fields[6] == Status.CANCELED then return {'CANCELED'} end
if not fields[1] then return {'NO_ASSIGNMENT'} end
if fields[3] == Stage.DELIVERED then return {'DELIVERED'} end
if fields[3] == Stage.FAILED then return {'FAILED'} end
local canceled = unappliedEventOf(stream, group, order, Kind.ORDER_CANCELED)
if canceled == BEHIND then return {'BEHIND'} end
if canceled then return {'CANCELED'} end
redis.call('HSET', key, 'assignment_status', stage)
emit(stream, Kind.DELIVERY_STATUS, order, stage, {Field.driver, fields[2], Field.assignment, fields[1],
    Field.restaurant, fields[4] or '', Field.customer, fields[5] or ''})
return {'UPDATED'}
