-- KEYS: the order's hash, its partition's stream. ARGV: order id, the canceling party
-- (CancelingParty), its reason, the order service's consumer group ('' to skip the next step).
-- First applies the order's newest delivery event the group has not applied yet (as get does),
-- so a pickup reported a moment ago counts. Then cancels if the party may: a customer while
-- PLACED, or once accepted until the kitchen has the food READY (not after pickup); a restaurant
-- an accepted order before pickup; an operator any order not yet final. The ORDER_CANCELED event
-- carries who and why; the delivery service ends the order's open assignment when it reads it.
-- Returns CANCELED, 'NOT_CANCELABLE', 'NOT_FOUND' or BEHIND (too many unapplied events to look
-- through: nothing changed).
local key, stream = KEYS[1], KEYS[2]
local order, party, reason, group = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if group ~= '' and applyNewestUnapplied(stream, group, key, order) == BEHIND then return BEHIND end
local fields = redis.call('HMGET', key, 'status', 'customer_id', 'restaurant_id', 'kitchen_status', 'driver_id')
local status = fields[1]
if not status then return 'NOT_FOUND' end
local beforePickup = status == Status.ACCEPTED or status == Status.ASSIGNED
local allowed
if party == Party.CUSTOMER then
    allowed = status == Status.PLACED or (beforePickup and fields[4] ~= Kitchen.READY)
elseif party == Party.RESTAURANT then
    allowed = beforePickup
else
    allowed = not finalStatus[status]
end
if not allowed then return 'NOT_CANCELABLE' end
local event = emit(stream, Kind.ORDER_CANCELED, order, nil, {Field.customer, fields[2] or '', Field.restaurant, fields[3] or '',
    Field.driver, fields[5] or '', Field.canceledBy, party, Field.cancelReason, reason})
redis.call('HSET', key, 'status', Status.CANCELED, 'last_event', event, 'canceled_by', party, 'cancel_reason', reason)
return Status.CANCELED
