-- KEYS: the driver's assignments (sorted set), the assignments' order, status and event hashes.
-- Returns a flat list: id, order id, status, id of the last event applied ('' for none) per
-- assignment, oldest first.
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
    out[#out + 1] = redis.call('HGET', KEYS[3], id) or ''
    out[#out + 1] = redis.call('HGET', KEYS[4], id) or ''
end
return out
