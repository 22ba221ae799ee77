-- A running task's heartbeat: renew its locks, liveness and record.
-- KEYS: lock set, heartbeat, task hash, log list (the lock set alone: its locks only,
-- where SHARDS keeps them apart from the task). ARGV: task, lock ttl ms, heartbeat
-- timeout ms, state ttl ms. Returns the locks this task no longer holds; they
-- stay in its set so that holds_locks keeps saying so until the task releases them.
local lost = {}
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('GET', key) == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2])
  else table.insert(lost, key) end
end
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[2]), tonumber(ARGV[4])))
if #KEYS > 1 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[4], ARGV[4])
end
return lost
