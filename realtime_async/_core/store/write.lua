-- Write a task's state record; see Store.write_state in base.py.
-- FINAL (a set of the final states) is put before this script by redis_store.py,
-- from realtime_async._core.records.FINAL_STATES.
-- KEYS: task hash, cancel flag, lock set, active registry, heartbeat.
-- ARGV: state, record body without its opening brace, ttl ms, mode ("0"
-- update: a final state is kept; "1" create: refuse a task that exists and is
-- not final), meta JSON (or ""), seq floor, task name, "1" to end the task,
-- then the pub/sub channels to publish the stored record to.
-- The floor is the last seq the writer saw: a record that Redis lost (a restart
-- without persistence) comes back above it, so seq never goes backwards.
-- Ending a task frees the locks it still holds, drops it from the registry and
-- stops its heartbeat in the same script as the final write, so whoever reads
-- a final state never finds its locks still taken.
-- Returns {seq, or -1 when a final state was kept, or -2 when a create found
-- an unfinished task; the stored record; the cancel flag}.
local function finish()
  if ARGV[8] ~= '1' then return end
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    if redis.call('GET', key) == ARGV[7] then redis.call('DEL', key) end
  end
  redis.call('DEL', KEYS[3], KEYS[5])
  redis.call('ZREM', KEYS[4], ARGV[7])
end
local cur = redis.call('HGET', KEYS[1], 'state')
local cancel = redis.call('EXISTS', KEYS[2])
if cur and ARGV[4] == '0' and FINAL[cur] then
  finish()
  return {-1, redis.call('HGET', KEYS[1], 'rec'), cancel}
end
if cur and ARGV[4] == '1' and not FINAL[cur] then
  return {-2, redis.call('HGET', KEYS[1], 'rec'), cancel}
end
if ARGV[4] == '1' then redis.call('DEL', KEYS[2]) end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
if seq <= tonumber(ARGV[6]) then
  seq = tonumber(ARGV[6]) + 1
  redis.call('HSET', KEYS[1], 'seq', seq)
end
local rec = '{"seq":' .. seq .. ',' .. ARGV[2]
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'rec', rec)
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'meta', ARGV[5]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
finish()
for i = 9, #ARGV do redis.call('PUBLISH', ARGV[i], rec) end
return {seq, rec, cancel}
