-- applyStage(key, event id, stage, driver): the projection of one delivery event on the order
-- hash `key`. Only an order in delivery moves (DELIVERED is final), and only forwards in its
-- partition's stream: an event at or before the order's `last_event` is skipped (the rules of
-- OrderStatus.after). Every delivery event carries its driver, so the newest one alone gives
-- both the stage and the driver: the events of an order may be applied in any order.
-- The event applied last is written again: GetOrderStatus may have applied it without a WAIT, and
-- the consumer's write (followed by its WAIT) is what makes it safe from a failover.
local function applyStage(key, event, stageName, driver)
    local fields = redis.call('HMGET', key, 'status', 'last_event')
    local status, last = fields[1], fields[2]
    local stage = stageStatus[stageName]
    if not (status and stage) then return end
    if last == event or ((not last or older(last, event)) and inDelivery[status]) then
        redis.call('HSET', key, 'status', stage, 'last_event', event)
        if driver ~= '' then redis.call('HSET', key, 'driver_id', driver) end
    end
end

-- The delivery stage and driver a stream entry (its fields by name) announces, or nil for other
-- events.
local function deliveryStage(fields)
    if fields[Field.kind] == Kind.DRIVER_ASSIGNED then
        return Stage.ASSIGNED, fields[Field.driver] or ''
    elseif fields[Field.kind] == Kind.DELIVERY_STATUS then
        return fields[Field.detail], fields[Field.driver] or ''
    end
end
