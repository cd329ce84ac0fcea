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
-- The fields only some orders have, returned only when present (most reads are of orders that
-- have few of them).
local optional = {'total_cents', 'currency', 'address_street', 'address_city', 'address_postal_code', 'address_notes',
    'estimated_ready_at', 'reject_reason', 'reject_message', 'kitchen_status', 'delivery_status', 'canceled_by', 'cancel_reason'}
local fields = redis.call('HMGET', key, 'status', 'total_price', unpack(optional))
if not fields[1] then return false end
local present = {}
for i, name in ipairs(optional) do
    if fields[i + 2] then
        present[#present + 1] = name
        present[#present + 1] = fields[i + 2]
    end
end
return {fields[1], fields[2] or '', redis.call('LRANGE', itemsKey, 0, -1), present,
    fields[3] and redis.call('LRANGE', linesKey, 0, -1) or {}}
