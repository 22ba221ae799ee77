-- A plain progress update, which is most writes, when the writer's guess of the stored record is
-- right; watched.py writes most of them by a WATCHed transaction instead, and calls this script
-- when it cannot tell (a task's first update, another write by the same process in between).
-- FINAL is put before this script by redis_store.py.
-- KEYS: task hash, cancel flag.
-- ARGV: state, ttl ms, "0" to leave the TTL alone (the writer set it itself not long ago; a hash
-- that did not exist gets it anyway) or "1", the seq floor (the last seq the writer saw) and
-- the log's 'logn' and 'logd' at that seq as the writer knows them ("" for no log), the record
-- as it is when its seq is the floor's next, what is published then, the pub/sub channels.
-- The writer made the record and the message (see redis_store.py): right unless another process
-- wrote meanwhile or Redis lost the record. Then nothing is written and the writer calls
-- write.lua, which numbers and builds them here. Building nothing, and calling Redis as little as
-- a write allows, is what makes this script cheaper than write.lua: each call costs more inside
-- a script than outside, and so does every function or table a script makes.
-- Returns {seq, "" (the caller has the record), the cancel flag}; {-1, the stored record, the
-- cancel flag} when a final state was kept (as write.lua); {-3, "", the cancel flag} when the
-- guess was wrong.
local cur, seq, last, dropped = unpack(redis.call('HMGET', KEYS[1], 'state', 'seq', 'logn', 'logd'))
local cancel = redis.call('EXISTS', KEYS[2])
if cur and FINAL[cur] then
  return {-1, redis.call('HGET', KEYS[1], 'rec'), cancel}
end
if tonumber(seq or '0') ~= tonumber(ARGV[4]) or (last or '') ~= ARGV[5] or (dropped or '') ~= ARGV[6] then
  return {-3, '', cancel}
end
seq = tonumber(ARGV[4]) + 1
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'seq', seq, 'rec', ARGV[7])
if ARGV[3] == '1' or not cur then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
for i = 9, #ARGV do redis.call('PUBLISH', ARGV[i], ARGV[8]) end
return {seq, '', cancel}
