-- KEYS: the order's hash, its partition's stream. ARGV: order id, restaurant id, ACCEPTED or
-- REJECTED. Records the decision of the order's restaurant on a PLACED order; the same decision
-- again answers the same, any other is FAILED_PRECONDITION.
local key, stream = KEYS[1], KEYS[2]
local fields = redis.call('HMGET', key, 'status', 'restaurant_id', 'decision', 'decided_by', 'customer_id')
local status = fields[1]
if not status then return {'ERR', 'NOT_FOUND:order ' .. ARGV[1] .. ' not found'} end
if fields[2] and fields[2] ~= '' and fields[2] ~= ARGV[2] then
    return {'ERR', 'PERMISSION_DENIED:order ' .. ARGV[1] .. ' was placed with restaurant ' .. fields[2]}
end
if status == Status.PLACED then
    local kind = ARGV[3] == Status.ACCEPTED and Kind.ORDER_ACCEPTED or Kind.ORDER_REJECTED
    local event = emit(stream, kind, ARGV[1], nil, {Field.customer, fields[5] or '', Field.restaurant, ARGV[2]})
    redis.call('HSET', key, 'status', ARGV[3], 'decision', ARGV[3], 'decided_by', ARGV[2], 'last_event', event)
    return ARGV[3]
end
if fields[3] == ARGV[3] and fields[4] == ARGV[2] then return ARGV[3] end
return {'ERR', 'FAILED_PRECONDITION:order ' .. ARGV[1] .. ' is ' .. status .. ', not PLACED'}
