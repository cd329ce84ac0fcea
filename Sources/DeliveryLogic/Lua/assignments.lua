-- KEYS: the driver's assignments (sorted set by assignment number), the assignments' order,
-- status and event hashes. ARGV: the number to continue after ('' for the first) and how many at
-- most ('' for all). Returns a flat list: id, order id, status, id of the last event applied (''
-- for none), number per assignment, oldest first.
local min = ARGV[1] ~= '' and ('(' .. ARGV[1]) or '-inf'
local range
if ARGV[2] ~= '' then
    range = redis.call('ZRANGE', KEYS[1], min, '+inf', 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]), 'WITHSCORES')
else
    range = redis.call('ZRANGE', KEYS[1], min, '+inf', 'BYSCORE', 'WITHSCORES')
end
local out = {}
for i = 1, #range, 2 do
    local id = range[i]
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
    out[#out + 1] = redis.call('HGET', KEYS[3], id) or ''
    out[#out + 1] = redis.call('HGET', KEYS[4], id) or ''
    out[#out + 1] = range[i + 1]
end
return out
