-- In the driver pool's slot: the projection of the delivery service's own events on the
-- assignments, the drivers' lists and their open-assignment counters. KEYS: the assignments'
-- order, driver, status and event hashes, then per event the driver's counter and sorted set and
-- the replaced driver's (the driver's again when nothing was replaced). ARGV per event: event
-- id, assignment, order, driver, the assignment's new status, the replaced assignment, its driver.
-- Each assignment keeps the id of the last event applied to it and skips older ones (the events
-- of one assignment are all in its order's partition), so any order of application ends the same.
local assignmentOrder, assignmentDriver, assignmentStatus, assignmentEvent = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

-- `closed` (from the Swift definition) lists the statuses that free the driver.
local function isOpen(status)
    return status ~= nil and status ~= false and not closed[status]
end

local function project(assignment, order, driver, status, event, counter, list)
    local last = redis.call('HGET', assignmentEvent, assignment)
    if last and not older(last, event) then return end
    local before = redis.call('HGET', assignmentStatus, assignment)
    if not before then
        redis.call('HSET', assignmentOrder, assignment, order)
        redis.call('HSET', assignmentDriver, assignment, driver)
        redis.call('ZADD', list, tonumber(string.match(assignment, '(%d+)$')) or 0, assignment)
    end
    redis.call('HSET', assignmentStatus, assignment, status)
    redis.call('HSET', assignmentEvent, assignment, event)
    if isOpen(before) and not isOpen(status) then redis.call('DECR', counter) end
    if isOpen(status) and not isOpen(before) then redis.call('INCR', counter) end
end

for e = 1, (#KEYS - 4) / 4 do
    local a, k = (e - 1) * 7, 4 + (e - 1) * 4
    project(ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 1], KEYS[k + 1], KEYS[k + 2])
    if ARGV[a + 6] ~= '' then
        project(ARGV[a + 6], ARGV[a + 3], ARGV[a + 7], REASSIGNED, ARGV[a + 1], KEYS[k + 3], KEYS[k + 4])
    end
end
return 1
