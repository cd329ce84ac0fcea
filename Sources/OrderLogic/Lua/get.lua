-- KEYS: the order's partition stream, the order's hash, its items, its priced lines. ARGV: order id, the order
-- service's consumer group, 'apply' or ''. With 'apply', first applies the order's newest
-- delivery event among those the group has not acknowledged (at most 256 looked at, else answers
-- BEHIND and changes nothing), the way the consumer does. Then returns {status, total, items,
-- total in minor units, currency, lines (flat, as place stores them), address street, city,
-- postal code, notes, estimated ready time, rejection reason and message, kitchen stage,
-- delivery stage, canceled by, cancel reason} ('' for what the order does not have) or nil. So an order changed a moment ago through the delivery service reads changed, in one round
-- trip. It acknowledges nothing: a consumer still applies those events (idempotently, with WAIT
-- when configured), so what this function wrote without a WAIT is never the only copy.
local stream, key, itemsKey, linesKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if ARGV[3] ~= '' and applyNewestUnapplied(stream, ARGV[2], key, ARGV[1]) == BEHIND then return BEHIND end
local fields = redis.call('HMGET', key, 'status', 'total_price', 'total_cents', 'currency', 'address_street', 'address_city',
    'address_postal_code', 'address_notes', 'estimated_ready_at', 'reject_reason', 'reject_message', 'kitchen_status',
    'delivery_status', 'canceled_by', 'cancel_reason')
if not fields[1] then return false end
for i = 2, 15 do fields[i] = fields[i] or '' end
return {fields[1], fields[2], redis.call('LRANGE', itemsKey, 0, -1), fields[3], fields[4],
    fields[3] ~= '' and redis.call('LRANGE', linesKey, 0, -1) or {}, fields[5], fields[6], fields[7], fields[8], fields[9],
    fields[10], fields[11], fields[12], fields[13], fields[14], fields[15]}
