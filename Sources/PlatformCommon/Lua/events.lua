-- Helpers for the functions that change state, so the change, the durable event and the
-- notification are one atomic step. `Kind`, `Field`, `channel` and `streamMaxLength` come from the
-- domain prelude (domainLua, built from the Swift definitions).

-- Appends an event to `stream` (the partition's stream, a key of the function): the seed's text
-- `<kind>:<order>[:<detail>]` as field `event`, the kind, order and detail as fields of their own,
-- then `fields`, a flat field/value list named by Field. Publishes the text on the channel unless
-- `quiet`. Returns the entry's id.
local function emit(stream, kind, order, detail, fields, quiet)
    local text = kind .. ':' .. order .. (detail and (':' .. detail) or '')
    local id = redis.call('XADD', stream, 'MAXLEN', '~', streamMaxLength, '*', Field.text, text, Field.kind, kind,
        Field.order, order, Field.detail, detail or '', unpack(fields))
    if not quiet then redis.call('PUBLISH', channel, text) end
    return id
end

-- Whether stream id `a` comes before `b` (ids of one stream).
local function older(a, b)
    local am, as = string.match(a, '(%d+)-(%d+)')
    local bm, bs = string.match(b, '(%d+)-(%d+)')
    am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
    return am < bm or (am == bm and as < bs)
end

-- Items as PlatformEvent reads them: `<byte length>:<bytes>` each, concatenated.
local function encodeItems(list)
    local parts = {}
    for i, item in ipairs(list) do parts[i] = #item .. ':' .. item end
    return table.concat(parts)
end

-- The fields of a stream entry's flat field/value list, by name.
local function entryFields(flat)
    local fields = {}
    for f = 1, #flat, 2 do fields[flat[f]] = flat[f + 1] end
    return fields
end
