-- Write a task's state record; see Store.write_state in base.py.
-- FINAL (a set of the final states) is put before this script by redis_store.py,
-- from realtime_async._core.records.FINAL_STATES.
-- KEYS: task hash, cancel flag, lock set, active registry, heartbeat, log list.
-- ARGV: state, record body without its opening brace, ttl ms, mode ("0"
-- update: a final state is kept; "1" create: refuse a task that exists and is
-- not final), meta JSON (or ""), seq floor, task name, "1" to end the task,
-- the number k of log lines, the log's line and byte bounds, the lines the
-- writer dropped before this write, the k lines (JSON without the opening
-- brace), then where to publish the record: a message head (see PUBLISHED,
-- put before this script by redis_store.py) and the pub/sub channels.
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
-- Each call to Redis costs more inside a script than outside: the hash is read with
-- one HMGET and written with one HSET.
local cur, seq, last, dropped, bytes = unpack(redis.call('HMGET', KEYS[1], 'state', 'seq', 'logn', 'logd', 'logb'))
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
  last, dropped, bytes = nil, nil, nil
end
seq = math.max(tonumber(seq or '0'), tonumber(ARGV[6])) + 1
local fields = {'state', ARGV[1], 'seq', seq}
local k, skipped = tonumber(ARGV[9]), tonumber(ARGV[12])
last, dropped = tonumber(last or '0'), tonumber(dropped or '0')
local log, published = '', ''
if k > 0 or skipped > 0 then
  bytes = tonumber(bytes or '0')
  dropped, last = dropped + skipped, last + skipped
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
  for _, v in ipairs({'logn', last, 'logd', dropped, 'logb', bytes}) do table.insert(fields, v) end
  log = '"log":{"last":' .. last .. ',"dropped":' .. dropped
  published = log .. ',"lines":[' .. table.concat(lines, ',') .. ']},'
  log = log .. '},'
elseif last > 0 then
  log = '"log":{"last":' .. last .. ',"dropped":' .. dropped .. '},'
  published = log
end
local rec = '{"seq":' .. seq .. ',' .. log .. ARGV[2]
table.insert(fields, 'rec')
table.insert(fields, rec)
if ARGV[5] ~= '' then
  table.insert(fields, 'meta')
  table.insert(fields, ARGV[5])
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if last > 0 then redis.call('PEXPIRE', KEYS[6], ARGV[3]) end
finish()
if published ~= log then rec = '{"seq":' .. seq .. ',' .. published .. ARGV[2] end
PUBLISHED(ARGV, 13 + k, seq, ARGV[1], rec)
return {seq, rec, cancel}
