-- KEYS: the restaurant's menu and its item order. Returns a flat list: id, name, price,
-- description per item, in the order they were first added.
local out = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    local item = cjson.decode(redis.call('HGET', KEYS[1], id))
    out[#out + 1] = id
    out[#out + 1] = item[1]
    out[#out + 1] = item[2]
    out[#out + 1] = item[3]
end
return out
