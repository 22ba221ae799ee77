-- The hot path of write.lua: a plain progress update, which is most writes. Same contract and
-- result as write.lua for mode "0" (update) with no meta, no log lines and no end, with fewer
-- arguments and calls to Redis (each costs more inside a script than outside).
-- FINAL and PUBLISHED are put before this script by redis_store.py.
-- KEYS: task hash, cancel flag.
-- ARGV: state, record body without its opening brace, ttl ms, "0" to leave the TTL alone (the
-- writer set it itself not long ago; a hash that did not exist gets it anyway) or "1", seq floor,
-- the record as it is when its seq is the floor's next and the task has no log, and what is
-- published then (both made by the caller, whose guess is right unless another process wrote
-- meanwhile or Redis lost the record: building them here costs more than the rest of the script),
-- then where to publish the record (see PUBLISHED).
-- Returns what write.lua returns, but an empty record when the guess was right.
local cur, seq, last, dropped = unpack(redis.call('HMGET', KEYS[1], 'state', 'seq', 'logn', 'logd'))
local cancel = redis.call('EXISTS', KEYS[2])
if cur and FINAL[cur] then
  return {-1, redis.call('HGET', KEYS[1], 'rec'), cancel}
end
local floor = tonumber(ARGV[5])
seq = math.max(tonumber(seq or '0'), floor) + 1
local guessed = seq == floor + 1 and not last
local rec = ARGV[6]
if not guessed then
  local log = ''
  if last then log = '"log":{"last":' .. last .. ',"dropped":' .. (dropped or '0') .. '},' end
  rec = '{"seq":' .. seq .. ',' .. log .. ARGV[2]
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'seq', seq, 'rec', rec)
if ARGV[4] == '1' or not cur then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
if guessed then
  for i = 9, #ARGV do redis.call('PUBLISH', ARGV[i], ARGV[7]) end
  return {seq, '', cancel}  -- the caller has the record
end
PUBLISHED(ARGV, 8, seq, ARGV[1], rec)
return {seq, rec, cancel}
