-- KEYS: the order's hash, its items, its partition's stream. ARGV: order id (new, from the
-- sequence), customer, total price, restaurant, then the items. Stores the order as PLACED and
-- appends ORDER_PLACED (stream only: the channel carries the seed's messages). Returns 'PLACED', or
-- 'EXISTS' (and changes nothing) when an order has the id already.
local key, itemsKey, stream = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
if redis.call('EXISTS', key) == 1 then return 'EXISTS' end
local items = {unpack(ARGV, 5)}
local event = emit(stream, Kind.ORDER_PLACED, id, nil, {Field.customer, ARGV[2], Field.restaurant, ARGV[4],
    Field.items, encodeItems(items), Field.total, ARGV[3]}, true)
redis.call('HSET', key, 'customer_id', ARGV[2], 'total_price', ARGV[3], 'restaurant_id', ARGV[4], 'status', Status.PLACED,
    'last_event', event)
redis.call('RPUSH', itemsKey, unpack(items))
return Status.PLACED
