-- applyStage(key, event id, stage, driver): the projection of one delivery event on the order
-- hash `key`. Only an order in delivery moves (DELIVERED is final, and so is CANCELED), and only
-- forwards among the order's delivery events: an event at or before the order's `delivery_event`
-- is skipped (the rules of OrderProgress.after). The order service's own events (ORDER_READY,
-- ORDER_CANCELED) do not order delivery events: they may be applied before an older delivery
-- event is. Every delivery event carries its driver, so the newest one alone gives the stage and
-- the driver: the events of an order may be applied in any order. Orders from before
-- `delivery_event` was kept: an order already showing a delivery stage got it from its
-- `last_event`. The event applied last is written again while the order still shows it (not once
-- it was canceled): GetOrderStatus may have applied it without a WAIT, and the consumer's write
-- (followed by its WAIT) is what makes it safe from a failover.
local function applyStage(key, event, stageName, driver)
    local fields = redis.call('HMGET', key, 'status', 'last_event', 'delivery_event')
    local status, last, deliveryLast = fields[1], fields[2], fields[3]
    local stage = stageStatus[stageName]
    if not (status and stage) then return end
    if not deliveryLast and stageShown[status] then deliveryLast = last end
    if (deliveryLast == event and status == stage) or ((not deliveryLast or older(deliveryLast, event)) and inDelivery[status]) then
        redis.call('HSET', key, 'status', stage, 'delivery_status', stageName, 'delivery_event', event)
        if not last or older(last, event) then redis.call('HSET', key, 'last_event', event) end
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

-- Applies to the order hash `key` the newest delivery event of `order` in `stream` that consumer
-- group `group` has not acknowledged yet, the way the consumer would, so a read or a check right
-- after a delivery change sees it. Looks at 256 entries at most: returns BEHIND when there are
-- more (and changes nothing), else nil.
local function applyNewestUnapplied(stream, group, key, order)
    local entries = redis.call('XRANGE', stream, unappliedStart(stream, group), '+', 'COUNT', 257)
    if #entries == 257 then return BEHIND end
    for i = #entries, 1, -1 do
        local fields = entryFields(entries[i][2])
        local stage, driver = deliveryStage(fields)
        if stage and fields[Field.order] == order then
            applyStage(key, entries[i][1], stage, driver)
            return nil
        end
    end
    return nil
end
