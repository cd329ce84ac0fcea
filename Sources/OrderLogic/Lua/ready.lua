-- KEYS: the order's hash, its partition's stream. ARGV: order id, restaurant id, the order
-- service's consumer group ('' to skip the next step). First applies the order's newest unapplied delivery event (as get
-- does). Then marks an accepted order's food READY, if the kitchen still has it (the order is
-- ACCEPTED or ASSIGNED: not picked up, not canceled), with ORDER_READY carrying the order's
-- status. Only the order's restaurant (or, for an order placed without one, the restaurant that
-- accepted it) may. Returns {'READY', status} (also when it was marked before, while the kitchen
-- still has it), {'NOT_FOUND'},
-- {'OTHER_RESTAURANT', its restaurant}, {'NOT_PREPARING', status} or BEHIND.
local key, stream = KEYS[1], KEYS[2]
local order, restaurant, group = ARGV[1], ARGV[2], ARGV[3]
if group ~= '' and applyNewestUnapplied(stream, group, key, order) == BEHIND then return BEHIND end
local fields = redis.call('HMGET', key, 'status', 'restaurant_id', 'kitchen_status', 'customer_id', 'decided_by')
local status = fields[1]
if not status then return {'NOT_FOUND'} end
local owner = (fields[2] and fields[2] ~= '') and fields[2] or fields[5]
if owner and owner ~= restaurant then return {'OTHER_RESTAURANT', owner} end
if not (status == Status.ACCEPTED or status == Status.ASSIGNED) then return {'NOT_PREPARING', status} end
if fields[3] == Kitchen.READY then return {'READY', status} end
-- Orders accepted before the kitchen's stage was kept are being prepared.
if fields[3] and fields[3] ~= Kitchen.PREPARING then return {'NOT_PREPARING', status} end
local event = emit(stream, Kind.ORDER_READY, order, nil, {Field.customer, fields[4] or '', Field.restaurant, owner or restaurant,
    Field.status, status})
redis.call('HSET', key, 'kitchen_status', Kitchen.READY, 'last_event', event)
return {'READY', status}
