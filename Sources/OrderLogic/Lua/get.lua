-- KEYS: the order's partition stream, the order's hash, its items, its priced lines. ARGV: order id, the order
-- service's consumer group, 'apply' or ''. With 'apply', first applies the order's newest
-- delivery event among those the group has not acknowledged (at most 256 looked at, else answers
-- BEHIND and changes nothing), the way the consumer does. Then returns {status, total, items, the
-- optional fields the order has (name, value, ...), its priced lines (flat, as place stores
-- them)} or nil. So an order changed a moment ago through the delivery service reads changed, in one round
-- trip. It acknowledges nothing: a consumer still applies those events (idempotently, with WAIT
-- when configured), so what this function wrote without a WAIT is never the only copy.
local stream, key, itemsKey, linesKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if ARGV[3] ~= '' and applyNewestUnapplied(stream, ARGV[2], key, ARGV[1]) == BEHIND then return BEHIND end
-- The fields only some orders have (optionalOrderField, from OrderKeys.optionalFields) are
-- returned only when present: most reads are of orders with few of them, and one HGETALL of the
-- small hash costs less than asking for each by name.
local all = redis.call('HGETALL', key)
local status, total, present, priced = nil, '', {}, false
for i = 1, #all, 2 do
    local name = all[i]
    if name == 'status' then
        status = all[i + 1]
    elseif name == 'total_price' then
        total = all[i + 1]
    elseif optionalOrderField[name] then
        present[#present + 1] = name
        present[#present + 1] = all[i + 1]
        if name == 'total_cents' then priced = true end
    end
end
if not status then return false end
return {status, total, redis.call('LRANGE', itemsKey, 0, -1), present, priced and redis.call('LRANGE', linesKey, 0, -1) or {}}
