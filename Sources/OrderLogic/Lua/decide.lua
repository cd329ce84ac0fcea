-- KEYS: the order's hash, its partition's stream. ARGV: order id, restaurant id, ACCEPTED or
-- REJECTED, the kitchen's minutes ('0': none; with ACCEPTED), the rejection reason and message
-- (with REJECTED), the caller's traceparent ('' when none). Records the decision of the order's
-- restaurant on a PLACED order, with the estimated ready time (the server's clock plus the
-- minutes) or the reason, on the order and on its event (with the trace); the same decision
-- again answers the same, marked REPEATED. Returns {'DECIDED', decision, estimated ready time in
-- ms or ''[, 'REPEATED']}, {'NOT_FOUND'}, {'OTHER_RESTAURANT', its restaurant} or {'NOT_PLACED',
-- its status}.
local key, stream = KEYS[1], KEYS[2]
local fields = redis.call('HMGET', key, 'status', 'restaurant_id', 'decision', 'decided_by', 'customer_id',
    'estimated_ready_at')
local status = fields[1]
if not status then return {'NOT_FOUND'} end
if fields[2] and fields[2] ~= '' and fields[2] ~= ARGV[2] then
    return {'OTHER_RESTAURANT', fields[2]}
end
if status == Status.PLACED then
    local details, change = {Field.customer, fields[5] or '', Field.restaurant, ARGV[2]}, {}
    local readyAt = ''
    if ARGV[3] == Status.ACCEPTED and tonumber(ARGV[4]) > 0 then
        local now = redis.call('TIME')
        readyAt = tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[4]) * 60000)
        details[#details + 1], details[#details + 2] = Field.readyAt, readyAt
        change = {'estimated_ready_at', readyAt}
    elseif ARGV[3] == Status.REJECTED then
        details[#details + 1], details[#details + 2] = Field.reason, ARGV[5]
        change = {'reject_reason', ARGV[5], 'reject_message', ARGV[6]}
    end
    if ARGV[7] ~= '' then details[#details + 1], details[#details + 2] = Field.trace, ARGV[7] end
    local kind = ARGV[3] == Status.ACCEPTED and Kind.ORDER_ACCEPTED or Kind.ORDER_REJECTED
    local event = emit(stream, kind, ARGV[1], nil, details)
    if ARGV[3] == Status.ACCEPTED then
        change[#change + 1], change[#change + 2] = 'kitchen_status', Kitchen.PREPARING
    end
    redis.call('HSET', key, 'status', ARGV[3], 'decision', ARGV[3], 'decided_by', ARGV[2], 'last_event', event, unpack(change))
    return {'DECIDED', ARGV[3], readyAt}
end
if fields[3] == ARGV[3] and fields[4] == ARGV[2] then return {'DECIDED', ARGV[3], fields[6] or '', 'REPEATED'} end
return {'NOT_PLACED', status}
