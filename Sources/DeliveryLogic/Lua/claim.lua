-- In the driver pool's slot. KEYS: the claims (order -> assignment), the assignment sequence, the
-- assignments' order, driver and status hashes, the drivers on shift, the waiting orders (sorted
-- by acceptance) and their details, then per candidate driver (those on shift a moment ago) its
-- open-assignment counter and its assignments (a sorted set by assignment number). ARGV: 'NEW'
-- (orders just accepted) or 'WAITING' (orders from the waiting list: only those still on it are
-- claimed, so one canceled or assigned by hand meanwhile is left alone), the number of candidates
-- k, the k drivers, then per order its id, the id of its ORDER_ACCEPTED, its restaurant and
-- customer. Gives each order that has no claim yet the least loaded candidate still on shift and
-- a new assignment; an order claimed before (a replay, another replica, a crash before the
-- assignment was recorded) keeps its claim. With nobody on shift a new order waits (its details
-- kept, for when a driver comes on shift). An order stays on the waiting list until its claim is
-- recorded on the order (the caller then takes it off), so a crash in between loses nothing.
-- Returns per order its assignment and driver ('' and '' when not claimed), then how many orders
-- are waiting.
local claims, sequence, assignmentOrder, assignmentDriver, assignmentStatus = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local onShift, waiting, waitingDetails = KEYS[6], KEYS[7], KEYS[8]
local fromWaiting, candidates = ARGV[1] == 'WAITING', tonumber(ARGV[2])
local out = {}
for i = 3 + candidates, #ARGV, 4 do
    local order, accepted = ARGV[i], ARGV[i + 1]
    local claimed = redis.call('HGET', claims, order)
    if fromWaiting and not claimed and not redis.call('ZSCORE', waiting, order) then
        out[#out + 1] = ''
        out[#out + 1] = ''
    elseif claimed then
        out[#out + 1] = claimed
        out[#out + 1] = redis.call('HGET', assignmentDriver, claimed)
    else
        local best, bestLoad = nil, nil
        for p = 1, candidates do
            if redis.call('SISMEMBER', onShift, ARGV[2 + p]) == 1 then
                local load = tonumber(redis.call('GET', KEYS[7 + 2 * p]) or '0')
                if bestLoad == nil or load < bestLoad then best, bestLoad = p, load end
            end
        end
        if best then
            local number = redis.call('INCR', sequence)
            local id = 'assignment_' .. number
            local driver = ARGV[2 + best]
            redis.call('HSET', assignmentOrder, id, order)
            redis.call('HSET', assignmentDriver, id, driver)
            redis.call('HSET', assignmentStatus, id, Stage.ASSIGNED)
            redis.call('INCR', KEYS[7 + 2 * best])
            redis.call('ZADD', KEYS[8 + 2 * best], number, id)
            redis.call('HSET', claims, order, id)
            out[#out + 1] = id
            out[#out + 1] = driver
        else
            local ms, seq = string.match(accepted, '(%d+)-(%d+)')
            redis.call('ZADD', waiting, 'NX', tonumber(ms) * 1000 + math.min(tonumber(seq), 999), order)
            redis.call('HSET', waitingDetails, order, accepted .. ' ' .. ARGV[i + 2] .. ' ' .. ARGV[i + 3])
            out[#out + 1] = ''
            out[#out + 1] = ''
        end
    end
end
out[#out + 1] = redis.call('ZCARD', waiting)
return out
