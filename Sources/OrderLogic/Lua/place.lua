-- KEYS: the order's hash, its items, its partition's stream, its priced lines, the customer's
-- index in the partition, and the restaurant's when the order names one. ARGV: order id (new,
-- from the sequence), customer, total price, restaurant, total in minor units and currency (''
-- for an order of free-text items), the address's street, city, postal code and notes (''
-- when none), the order's number, the number of items n, the n items, then the priced lines,
-- five entries each (menu item id, name, quantity, note, unit price in minor units). Stores the
-- order as PLACED, lists it in the indexes (by number: ListOrders) and appends ORDER_PLACED
-- (stream only: the channel carries the seed's messages). Returns 'PLACED', or 'EXISTS' (and
-- changes nothing) when an order has the id already.
local key, itemsKey, stream, linesKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[1]
if redis.call('EXISTS', key) == 1 then return 'EXISTS' end
for i = 5, #KEYS do redis.call('ZADD', KEYS[i], ARGV[11], id) end
local count = tonumber(ARGV[12])
local items = {unpack(ARGV, 13, 12 + count)}
local event = emit(stream, Kind.ORDER_PLACED, id, nil, {Field.customer, ARGV[2], Field.restaurant, ARGV[4],
    Field.items, encodeItems(items), Field.total, ARGV[3]}, true)
local fields = {'customer_id', ARGV[2], 'total_price', ARGV[3], 'restaurant_id', ARGV[4], 'status', Status.PLACED,
    'last_event', event}
local optional = {'total_cents', 'currency', 'address_street', 'address_city', 'address_postal_code', 'address_notes'}
for i, name in ipairs(optional) do
    if ARGV[4 + i] ~= '' then
        fields[#fields + 1] = name
        fields[#fields + 1] = ARGV[4 + i]
    end
end
redis.call('HSET', key, unpack(fields))
redis.call('RPUSH', itemsKey, unpack(items))
if #ARGV > 12 + count then redis.call('RPUSH', linesKey, unpack(ARGV, 13 + count)) end
return Status.PLACED
