-- KEYS: the order's hash, its partition's stream. ARGV: order id, restaurant id, ACCEPTED or
-- REJECTED. Records the decision of the order's restaurant on a PLACED order; the same decision
-- again answers the same. Returns {'DECIDED', decision}, {'NOT_FOUND'}, {'OTHER_RESTAURANT', its
-- restaurant} or {'NOT_PLACED', its status}.
local key, stream = KEYS[1], KEYS[2]
local fields = redis.call('HMGET', key, 'status', 'restaurant_id', 'decision', 'decided_by', 'customer_id')
local status = fields[1]
if not status then return {'NOT_FOUND'} end
if fields[2] and fields[2] ~= '' and fields[2] ~= ARGV[2] then
    return {'OTHER_RESTAURANT', fields[2]}
end
if status == Status.PLACED then
    local kind = ARGV[3] == Status.ACCEPTED and Kind.ORDER_ACCEPTED or Kind.ORDER_REJECTED
    local event = emit(stream, kind, ARGV[1], nil, {Field.customer, fields[5] or '', Field.restaurant, ARGV[2]})
    redis.call('HSET', key, 'status', ARGV[3], 'decision', ARGV[3], 'decided_by', ARGV[2], 'last_event', event)
    return {'DECIDED', ARGV[3]}
end
if fields[3] == ARGV[3] and fields[4] == ARGV[2] then return {'DECIDED', ARGV[3]} end
return {'NOT_PLACED', status}
