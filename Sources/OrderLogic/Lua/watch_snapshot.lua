-- KEYS: the order's hash. Returns {status, driver, restaurant, customer, last event id, estimated
-- ready time, rejection reason, kitchen stage, delivery stage, cancel reason} ('' for what it
-- lacks) or nil.
local fields = redis.call('HMGET', KEYS[1], 'status', 'driver_id', 'restaurant_id', 'customer_id', 'last_event',
    'estimated_ready_at', 'reject_reason', 'kitchen_status', 'delivery_status', 'cancel_reason')
if not fields[1] then return false end
for i = 2, 10 do fields[i] = fields[i] or '' end
return fields
