-- KEYS: the order's delivery record, its partition's stream. ARGV: order id, new stage. Moves the
-- order's current assignment to the stage (DELIVERED is final) and appends DELIVERY_STATUS.
-- Returns {'UPDATED'}, {'NO_ASSIGNMENT'} or {'DELIVERED'} (already: nothing changed).
local key, stream = KEYS[1], KEYS[2]
local order, stage = ARGV[1], ARGV[2]
local fields = redis.call('HMGET', key, 'assignment', 'driver', 'assignment_status', 'restaurant', 'customer')
if not fields[1] then return {'NO_ASSIGNMENT'} end
if fields[3] == Stage.DELIVERED then return {'DELIVERED'} end
redis.call('HSET', key, 'assignment_status', stage)
emit(stream, Kind.DELIVERY_STATUS, order, stage, {Field.driver, fields[2], Field.assignment, fields[1],
    Field.restaurant, fields[4] or '', Field.customer, fields[5] or ''})
return {'UPDATED'}
