-- KEYS: a customer's PlaceOrder request id (OrderKeys.request). ARGV: the request's fingerprint,
-- the order id it is to place, the lifetime in seconds. Returns 'CLAIMED' when the request id
-- was free and now names that order, else '<fingerprint> <order id>' of the request that took it.
local claimed = redis.call('GET', KEYS[1])
if claimed then return claimed end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'EX', ARGV[3])
return 'CLAIMED'
