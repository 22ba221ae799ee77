-- Write a task's state record; see Store.write_state in base.py.
-- FINAL (a set of the final states) is put before this script by redis_store.py,
-- from realtime_async._core.records.FINAL_STATES.
-- KEYS: task hash, cancel flag, lock set, active registry, heartbeat, log list.
-- ARGV: state, record body without its opening brace, ttl ms, mode ("0"
-- update: a final state is kept; "1" create: refuse a task that exists and is
-- not final), meta JSON (or ""), seq floor, task name, "1" to end the task,
-- the number k of log lines, the log's line and byte bounds, the lines the
-- writer dropped before this write, the k lines (JSON without the opening
-- brace), then the pub/sub channels to publish the record to.
-- The floor is the last seq the writer saw: a record that Redis lost (a restart
-- without persistence) comes back above it, so seq never goes backwards.
-- Ending a task frees the locks it still holds, drops it from the registry and
-- stops its heartbeat in the same script as the final write, so whoever reads
-- a final state never finds its locks still taken.
-- Log lines are numbered after the hash's 'logn' and pushed on the log list;
-- the oldest are dropped while the list is over either bound ('logd' counts
-- them, 'logb' keeps the list's bytes). The stored record gets
-- "log":{"last","dropped"}; the one returned and published also has the new lines.
-- Returns {seq, or -1 when a final state was kept, or -2 when a create found
-- an unfinished task; the record; the cancel flag}.
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
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[2], KEYS[6])
  redis.call('HDEL', KEYS[1], 'logn', 'logd', 'logb')
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
if seq <= tonumber(ARGV[6]) then
  seq = tonumber(ARGV[6]) + 1
  redis.call('HSET', KEYS[1], 'seq', seq)
end
local k, skipped = tonumber(ARGV[9]), tonumber(ARGV[12])
local last = tonumber(redis.call('HGET', KEYS[1], 'logn') or '0')
local log, published = '', ''
if k > 0 or skipped > 0 then
  local dropped = tonumber(redis.call('HGET', KEYS[1], 'logd') or '0') + skipped
  local bytes = tonumber(redis.call('HGET', KEYS[1], 'logb') or '0')
  last = last + skipped
  local lines = {}
  for i = 1, k do
    last = last + 1
    lines[i] = '{"n":' .. last .. ',' .. ARGV[12 + i]
    bytes = bytes + #lines[i]
  end
  if k > 0 then redis.call('RPUSH', KEYS[6], unpack(lines)) end
  local count, most, budget = redis.call('LLEN', KEYS[6]), tonumber(ARGV[10]), tonumber(ARGV[11])
  while count > 0 and (count > most or bytes > budget) do
    bytes = bytes - #redis.call('LPOP', KEYS[6])
    dropped, count = dropped + 1, count - 1
  end
  redis.call('HSET', KEYS[1], 'logn', last, 'logd', dropped, 'logb', bytes)
  log = '"log":{"last":' .. last .. ',"dropped":' .. dropped
  published = log .. ',"lines":[' .. table.concat(lines, ',') .. ']},'
  log = log .. '},'
elseif last > 0 then
  log = '"log":{"last":' .. last .. ',"dropped":' .. redis.call('HGET', KEYS[1], 'logd') .. '},'
  published = log
end
local rec = '{"seq":' .. seq .. ',' .. log .. ARGV[2]
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'rec', rec)
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'meta', ARGV[5]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if last > 0 then redis.call('PEXPIRE', KEYS[6], ARGV[3]) end
finish()
if published ~= log then rec = '{"seq":' .. seq .. ',' .. published .. ARGV[2] end
for i = 13 + k, #ARGV do redis.call('PUBLISH', ARGV[i], rec) end
return {seq, rec, cancel}
