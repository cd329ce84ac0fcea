-- What the functions that read through a consumer group's unacknowledged entries share.

-- The XRANGE start of the entries of `stream` that consumer group `group` has not acknowledged:
-- its oldest pending entry, else just after the last one it handed out; the stream's beginning
-- when the group does not exist yet.
local function unappliedStart(stream, group)
    local ok, pending = pcall(redis.call, 'XPENDING', stream, group)
    if not ok then return '-' end
    if pending[1] > 0 then return pending[2] end
    for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
        local name, delivered
        for f = 1, #info, 2 do
            if info[f] == 'name' then name = info[f + 1] end
            if info[f] == 'last-delivered-id' then delivered = info[f + 1] end
        end
        if name == group then return '(' .. delivered end
    end
    return '-'
end

-- Whether `stream` holds an entry of `kind` for `order` that consumer group `group` has not
-- acknowledged yet: a check that must not wait for the consumer (a driver's change racing a
-- cancel). Looks at 256 entries at most: BEHIND when there are more.
local function unappliedEventOf(stream, group, order, kind)
    local entries = redis.call('XRANGE', stream, unappliedStart(stream, group), '+', 'COUNT', 257)
    if #entries == 257 then return BEHIND end
    for i = 1, #entries do
        local fields = entryFields(entries[i][2])
        if fields[Field.kind] == kind and fields[Field.order] == order then return true end
    end
    return false
end
