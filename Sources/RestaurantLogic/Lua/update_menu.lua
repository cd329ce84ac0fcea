-- KEYS: the restaurant's menu (item id -> JSON of name, price, description) and the item ids in
-- the order they were first added. ARGV: item id, name, price, description per item.
local menu, order = KEYS[1], KEYS[2]
for i = 1, #ARGV, 4 do
    if redis.call('HEXISTS', menu, ARGV[i]) == 0 then
        redis.call('RPUSH', order, ARGV[i])
    end
    redis.call('HSET', menu, ARGV[i], cjson.encode({ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]}))
end
return 'SUCCESS'
