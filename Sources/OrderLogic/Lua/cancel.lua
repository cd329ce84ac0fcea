-- KEYS: the order's hash, its partition's stream. ARGV: order id. Cancels a PLACED order. Returns
-- CANCELED, 'NOT_CANCELABLE' (not PLACED) or 'NOT_FOUND'.
local key, stream = KEYS[1], KEYS[2]
local fields = redis.call('HMGET', key, 'status', 'customer_id', 'restaurant_id')
local status = fields[1]
if not status then return 'NOT_FOUND' end
if status ~= Status.PLACED then return 'NOT_CANCELABLE' end
local event = emit(stream, Kind.ORDER_CANCELED, ARGV[1], nil, {Field.customer, fields[2] or '', Field.restaurant, fields[3] or ''})
redis.call('HSET', key, 'status', Status.CANCELED, 'last_event', event)
return Status.CANCELED
