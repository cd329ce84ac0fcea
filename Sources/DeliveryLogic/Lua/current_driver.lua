-- KEYS: the order's delivery record. Returns the driver of its current assignment, or nil.
local fields = redis.call('HMGET', KEYS[1], 'assignment', 'driver')
if not fields[1] then return false end
return fields[2]
