-- In the driver pool's slot. KEYS: the claims (order -> assignment), the assignment sequence, the
-- assignments' order, driver and status hashes, then per pool driver its open-assignment
-- counter and its assignments (a sorted set by assignment number). ARGV: the pool size k, the k
-- drivers, then the orders to assign. Gives each order that has no claim yet the least loaded
-- driver and a new assignment; an order claimed before (a replay, another replica, a crash
-- before the assignment was recorded) keeps its claim. Returns assignment, driver per order.
local claims, sequence, assignmentOrder, assignmentDriver, assignmentStatus = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local poolSize = tonumber(ARGV[1])
local out = {}
for i = 2 + poolSize, #ARGV do
    local order = ARGV[i]
    local claimed = redis.call('HGET', claims, order)
    if claimed then
        out[#out + 1] = claimed
        out[#out + 1] = redis.call('HGET', assignmentDriver, claimed)
    else
        local best, bestLoad = 1, nil
        for p = 1, poolSize do
            local load = tonumber(redis.call('GET', KEYS[4 + 2 * p]) or '0')
            if bestLoad == nil or load < bestLoad then best, bestLoad = p, load end
        end
        local number = redis.call('INCR', sequence)
        local id = 'assignment_' .. number
        local driver = ARGV[1 + best]
        redis.call('HSET', assignmentOrder, id, order)
        redis.call('HSET', assignmentDriver, id, driver)
        redis.call('HSET', assignmentStatus, id, Stage.ASSIGNED)
        redis.call('INCR', KEYS[4 + 2 * best])
        redis.call('ZADD', KEYS[5 + 2 * best], number, id)
        redis.call('HSET', claims, order, id)
        out[#out + 1] = id
        out[#out + 1] = driver
    end
end
return out
