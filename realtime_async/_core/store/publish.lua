-- PUBLISHED(argv, from, seq, state, rec): publish a written record as a Publication
-- (base.py) says. argv[from] is the message head ("" to publish the record's JSON as it is);
-- the channels follow. A head is the start of a msgpack map of six entries whose first three
-- it holds (see realtime_async._core.publishing); the rest is packed here as msgpack-python
-- packs it, in the smallest format that fits: "seq" (an unsigned integer below 2^32), "state"
-- and "record" (strings). That costs less than cmsgpack's general encoder.
local function BYTES(n, k)
  local out = {}
  for i = k, 1, -1 do
    out[i] = n % 256
    n = math.floor(n / 256)
  end
  return string.char(unpack(out))
end
local function PACKED_UINT(n)
  if n < 128 then return string.char(n) end
  if n < 256 then return '\204' .. BYTES(n, 1) end
  if n < 65536 then return '\205' .. BYTES(n, 2) end
  return '\206' .. BYTES(n, 4)
end
local function PACKED_STR(s)
  local n = #s
  if n < 32 then return string.char(160 + n) .. s end
  if n < 256 then return '\217' .. BYTES(n, 1) .. s end
  if n < 65536 then return '\218' .. BYTES(n, 2) .. s end
  return '\219' .. BYTES(n, 4) .. s
end
local function PUBLISHED(argv, from, seq, state, rec)
  if #argv <= from then return end
  local payload = rec
  if argv[from] ~= '' then
    payload = argv[from] .. '\163seq' .. PACKED_UINT(seq) .. '\165state' .. PACKED_STR(state)
      .. '\166record' .. PACKED_STR(rec)
  end
  for i = from + 1, #argv do redis.call('PUBLISH', argv[i], payload) end
end
