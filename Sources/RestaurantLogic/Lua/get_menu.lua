-- KEYS: the restaurant's menu, its item order, its profile. Returns the currency ('' when the
-- restaurant never named one), then a flat list: id, name, price, description, price in minor
-- units and unavailable ('1' or '0') per item, in the order they were first added. Items stored
-- before prices had minor units answer '' for those, and '0'.
local out = {redis.call('HGET', KEYS[3], 'currency') or ''}
for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    local item = cjson.decode(redis.call('HGET', KEYS[1], id))
    out[#out + 1] = id
    out[#out + 1] = item[1]
    out[#out + 1] = item[2]
    out[#out + 1] = item[3]
    out[#out + 1] = item[4] or ''
    out[#out + 1] = item[5] or '0'
end
return out
