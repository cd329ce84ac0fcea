-- KEYS: the delivery record of each event's order (`DeliveryKeys.order`, all in one partition).
-- ARGV per event: the order status it announces, its event id. Each record's `order_status`
-- follows the newest of them. Returns the positions (1-based) of the ACCEPTED events whose order
-- has no automatic assignment yet: the caller claims drivers for those, then records them.
local waiting = {}
for i = 1, #KEYS do
    local key, status, event = KEYS[i], ARGV[2 * i - 1], ARGV[2 * i]
    local last = redis.call('HGET', key, 'order_event')
    if not last or older(last, event) then
        redis.call('HSET', key, 'order_status', status, 'order_event', event)
    end
    if status == Status.ACCEPTED and not redis.call('HGET', key, 'auto_assigned') then
        waiting[#waiting + 1] = i
    end
end
return waiting
