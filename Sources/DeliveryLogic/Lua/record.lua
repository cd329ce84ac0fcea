-- KEYS: the partition's stream, then the delivery record of each order. ARGV per order: order id,
-- its claimed assignment, driver, restaurant, customer. Records each order's automatic
-- assignment once and appends DRIVER_ASSIGNED. Returns how many were recorded now.
local stream = KEYS[1]
local recorded = 0
for i = 2, #KEYS do
    local a = (i - 2) * 5
    local key, order, assignment, driver, restaurant, customer = KEYS[i], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
    if not redis.call('HGET', key, 'auto_assigned') then
        redis.call('HSET', key, 'accepted', '1', 'auto_assigned', '1', 'restaurant', restaurant, 'customer', customer,
            'assignment', assignment, 'driver', driver, 'assignment_status', Stage.ASSIGNED)
        emit(stream, Kind.DRIVER_ASSIGNED .. ':' .. order .. ':' .. driver, {Field.driver, driver, Field.assignment, assignment,
            Field.restaurant, restaurant, Field.customer, customer})
        recorded = recorded + 1
    end
end
return recorded
