-- In the driver pool's slot. KEYS: the drivers on shift, the drivers known, the waiting orders
-- and their details. ARGV: 'ON' or 'OFF', then drivers; or 'ENLIST', then drivers: those never
-- known before come on shift (the pool named at start), the others keep what was set; or 'READ'
-- alone. Returns
-- the drivers on shift, then (after a '|') up to 256 waiting orders, oldest first, each as its
-- id and details (the id of its ORDER_ACCEPTED, restaurant and customer, space-separated).
local onShift, known, waiting, details = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
for i = 2, #ARGV do
    if ARGV[1] == 'ENLIST' then
        if redis.call('SADD', known, ARGV[i]) == 1 then redis.call('SADD', onShift, ARGV[i]) end
    else
        redis.call('SADD', known, ARGV[i])
        if ARGV[1] == 'ON' then redis.call('SADD', onShift, ARGV[i]) else redis.call('SREM', onShift, ARGV[i]) end
    end
end
local out = redis.call('SMEMBERS', onShift)
out[#out + 1] = '|'
for _, order in ipairs(redis.call('ZRANGE', waiting, 0, 255)) do
    out[#out + 1] = order
    out[#out + 1] = redis.call('HGET', details, order) or ''
end
return out
