-- KEYS: the restaurant's menu, its item order, its profile. Returns the currency ('' when the
-- restaurant never named one), its pause ('1' or '') and the pause's end ('0' for none), then a
-- flat list: id, name, price, description, price in minor
-- units and unavailable ('1' or '0') per item, in the order they were first added. Items stored
-- before prices had minor units answer '' for those, and '0'.
local profile = redis.call('HMGET', KEYS[3], 'currency', 'paused', 'paused_until')
local out = {profile[1] or '', profile[2] or '', profile[3] or '0'}
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
