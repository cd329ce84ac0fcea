-- KEYS: the partition's stream, then the delivery record of each event's order
-- (`DeliveryKeys.order`). ARGV per event: the order id, the order status the event announces, its
-- event id, and for an ACCEPTED order its claimed assignment, driver, restaurant and customer (''
-- otherwise). Each record's `order_status` follows the newest of the events; each ACCEPTED order
-- gets its claimed assignment recorded, with DRIVER_ASSIGNED, once (`auto_assigned`); a CANCELED
-- order's open assignment ends, with DELIVERY_STATUS CANCELED (which frees its driver in the
-- pool), and so does a claim that comes for an order canceled meanwhile (one that waited for a
-- driver); a claim that comes for an order given a driver by hand meanwhile ends as REASSIGNED.
-- An ACCEPTED order is marked accepted with or without a claim (AssignDriver needs that of an
-- order waiting for a driver). Returns how many were recorded now.
local stream = KEYS[1]
local recorded = 0
for i = 2, #KEYS do
    local a = (i - 2) * 7
    local key, order, status, event = KEYS[i], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
    local last = redis.call('HGET', key, 'order_event')
    if not last or older(last, event) then
        redis.call('HSET', key, 'order_status', status, 'order_event', event)
    end
    local assignment, driver, restaurant, customer = ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
    if status == Status.ACCEPTED and not redis.call('HGET', key, 'accepted') then
        redis.call('HSET', key, 'accepted', '1', 'restaurant', restaurant, 'customer', customer)
    end
    local current = redis.call('HMGET', key, 'auto_assigned', 'order_status', 'assignment', 'assignment_status')
    if assignment ~= '' and not current[1] and current[3] and not closed[current[4]] then
        -- Given a driver by hand while it waited: the claim ends at once, freeing its driver.
        redis.call('HSET', key, 'auto_assigned', '1')
        emit(stream, Kind.DELIVERY_STATUS, order, REASSIGNED, {Field.driver, driver, Field.assignment, assignment,
            Field.restaurant, restaurant, Field.customer, customer})
    elseif assignment ~= '' and not current[1] then
        local canceled = current[2] == Status.CANCELED
        redis.call('HSET', key, 'accepted', '1', 'auto_assigned', '1', 'restaurant', restaurant, 'customer', customer,
            'assignment', assignment, 'driver', driver, 'assignment_status', canceled and CANCELED or Stage.ASSIGNED)
        if canceled then
            emit(stream, Kind.DELIVERY_STATUS, order, CANCELED, {Field.driver, driver, Field.assignment, assignment,
                Field.restaurant, restaurant, Field.customer, customer})
        else
            emit(stream, Kind.DRIVER_ASSIGNED, order, driver, {Field.driver, driver, Field.assignment, assignment,
                Field.restaurant, restaurant, Field.customer, customer})
            recorded = recorded + 1
        end
    end
    if status == Status.CANCELED then
        local open = redis.call('HMGET', key, 'assignment', 'driver', 'assignment_status', 'restaurant', 'customer')
        if open[1] and not closed[open[3]] then
            redis.call('HSET', key, 'assignment_status', CANCELED)
            emit(stream, Kind.DELIVERY_STATUS, order, CANCELED, {Field.driver, open[2], Field.assignment, open[1],
                Field.restaurant, open[4] or '', Field.customer, open[5] or ''})
        end
    end
end
return recorded
