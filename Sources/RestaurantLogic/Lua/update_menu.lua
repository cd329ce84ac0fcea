-- KEYS: the restaurant's menu (item id -> JSON of name, price, description, price in minor
-- units, unavailable), the item ids in the order they were first added, and the restaurant's
-- profile hash (its currency). ARGV: the currency to set ('' keeps the restaurant's), the
-- currency the update's minor units were computed in, the default currency (of a restaurant that
-- never named one), then per item its id, name, price, description, price in minor units, and
-- '1' when unavailable ('0' otherwise). Returns 'SUCCESS'; 'CURRENCY_CHANGED' (and changes
-- nothing) when the restaurant's currency is no longer the one the update was priced in (a
-- concurrent change); 'EVERY_ITEM_NEEDED' when the currency changes and the update leaves out an
-- item of the menu (whose minor units would silently mean another currency).
local menu, order, profile = KEYS[1], KEYS[2], KEYS[3]
local current = redis.call('HGET', profile, 'currency') or ARGV[3]
if ARGV[1] == '' and current ~= ARGV[2] then return 'CURRENCY_CHANGED' end
if ARGV[1] ~= '' and ARGV[1] ~= current then
    local given = {}
    for i = 4, #ARGV, 6 do given[ARGV[i]] = true end
    for _, id in ipairs(redis.call('LRANGE', order, 0, -1)) do
        if not given[id] then return 'EVERY_ITEM_NEEDED' end
    end
end
if ARGV[1] ~= '' then redis.call('HSET', profile, 'currency', ARGV[1]) end
for i = 4, #ARGV, 6 do
    if redis.call('HEXISTS', menu, ARGV[i]) == 0 then
        redis.call('RPUSH', order, ARGV[i])
    end
    redis.call('HSET', menu, ARGV[i], cjson.encode({ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]}))
end
return 'SUCCESS'
