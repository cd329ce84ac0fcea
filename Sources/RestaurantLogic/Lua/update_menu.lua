-- KEYS: the restaurant's menu (item id -> JSON of name, price, description, price in minor
-- units, unavailable), the item ids in the order they were first added, and the restaurant's
-- profile hash (its currency). ARGV: the currency ('' keeps the restaurant's), then per item its
-- id, name, price, description, price in minor units, and '1' when unavailable ('0' otherwise).
local menu, order, profile = KEYS[1], KEYS[2], KEYS[3]
if ARGV[1] ~= '' then redis.call('HSET', profile, 'currency', ARGV[1]) end
for i = 2, #ARGV, 6 do
    if redis.call('HEXISTS', menu, ARGV[i]) == 0 then
        redis.call('RPUSH', order, ARGV[i])
    end
    redis.call('HSET', menu, ARGV[i], cjson.encode({ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]}))
end
return 'SUCCESS'
