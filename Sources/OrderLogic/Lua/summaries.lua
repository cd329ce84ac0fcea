-- KEYS: per order (all of one partition) its hash and its items. Returns per order its status,
-- customer, restaurant, total price, total in minor units, currency, kitchen stage, delivery
-- stage ('' for what it lacks; status '' for an order that is gone) and its items (a list).
local out = {}
for i = 1, #KEYS, 2 do
    local fields = redis.call('HMGET', KEYS[i], 'status', 'customer_id', 'restaurant_id', 'total_price', 'total_cents',
        'currency', 'kitchen_status', 'delivery_status')
    for f = 1, 8 do out[#out + 1] = fields[f] or '' end
    out[#out + 1] = redis.call('LRANGE', KEYS[i + 1], 0, -1)
end
return out
