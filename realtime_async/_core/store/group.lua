-- A part's write reaches its group: run in the same MULTI as write.lua (one round trip, atomic).
-- FINAL (a set of the final states), STATE (each state by its name) and STATES (in the order
-- a group counts them) are put before this script by redis_store.py, from records.py.
-- KEYS: the part's hash, the parent's hash, the parent's parts hash, the parent's lock set,
--       the active registry, the parent's cancel flag.
-- ARGV: the part's name, the parent's name, the publish interval (ms), the final ttl (ms),
--       the progress ttl (ms), the cancel flags' key prefix, the cancel flags' ttl (ms),
--       "1" to settle (no part changed: decide again, as cleanup does), then the parent's
--       pub/sub channels.
-- The parts hash holds, per part, {"s": state, "p": percent, "w": weight, "t": title,
-- "e": public error once it failed} as of its last write; the parent's hash holds the aggregate: 'g:<state>' counts, 'g:wp' the sum of
-- weight × percent, 'g:sumw', 'g:parts', 'g:ended' (parts final), 'g:policy', 'g:pub'
-- (when the parent was last published, ms) and 'g:dirty'. A part's write changes them
-- by its own difference only: O(1) whatever the group's size.
-- The parent's record is rewritten and published at most once per interval (a final
-- state always); otherwise it is marked dirty and the caller flushes it later
-- (ARGV[8] = "1" with no part change, after the interval).
-- Returns {0} (nothing to do), {1, record, final state or "", parts to cancel...}
-- (published), or {2, ms until the parent may be published} (dirty).
local parent_state = redis.call('HGET', KEYS[2], 'state')
if not parent_state then return {0} end
local changed = false
if ARGV[8] ~= '1' then
  local rec = redis.call('HGET', KEYS[1], 'rec')
  local packed = redis.call('HGET', KEYS[3], ARGV[1])
  if not rec or not packed then return {0} end
  local part, before = cjson.decode(rec), cjson.decode(packed)
  local state = part.state
  local percent = tonumber(part.percent) or 0
  if state == STATE.success then percent = 100 end
  if state == before.s and percent == before.p then return {0} end
  local weight = tonumber(before.w)
  redis.call('HINCRBY', KEYS[2], 'g:' .. before.s, -1)
  redis.call('HINCRBY', KEYS[2], 'g:' .. state, 1)
  redis.call('HINCRBYFLOAT', KEYS[2], 'g:wp', weight * (percent - before.p))
  if FINAL[state] and not FINAL[before.s] then redis.call('HINCRBY', KEYS[2], 'g:ended', 1) end
  before.s, before.p = state, percent
  if FINAL[state] and type(part.error) == 'string' then before.e = part.error end
  redis.call('HSET', KEYS[3], ARGV[1], cjson.encode(before))
  changed = true
end
if FINAL[parent_state] then return {0} end
local function count(state) return tonumber(redis.call('HGET', KEYS[2], 'g:' .. state) or '0') end
local parts = tonumber(redis.call('HGET', KEYS[2], 'g:parts'))
local ended = tonumber(redis.call('HGET', KEYS[2], 'g:ended') or '0')
local policy = redis.call('HGET', KEYS[2], 'g:policy')
local failed = count(STATE.failure) + count(STATE.lost)
local final = nil
if ended >= parts then
  if redis.call('EXISTS', KEYS[6]) == 1 then final = STATE.cancelled
  elseif count(STATE.success) == parts then final = STATE.success
  elseif failed > 0 then final = STATE.failure
  else final = STATE.cancelled end
elseif policy == 'fail_fast' and (failed > 0 or count(STATE.cancelled) > 0) then
  final = STATE.failure
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local last = tonumber(redis.call('HGET', KEYS[2], 'g:pub') or '0')
local interval = tonumber(ARGV[3])
if not final and now - last < interval then
  if changed then redis.call('HSET', KEYS[2], 'g:dirty', '1') end
  if redis.call('HGET', KEYS[2], 'g:dirty') then return {2, last + interval - now} end
  return {0}
end
if not final and not changed and not redis.call('HGET', KEYS[2], 'g:dirty') then return {0} end
local record = cjson.decode(redis.call('HGET', KEYS[2], 'rec'))
local sumw = tonumber(redis.call('HGET', KEYS[2], 'g:sumw'))
local wp = tonumber(redis.call('HGET', KEYS[2], 'g:wp'))
local percent = math.floor(math.max(0, math.min(100, wp / sumw)) * 100 + 0.5) / 100
local counts = {}
for _, state in ipairs(STATES) do counts[state] = count(state) end
record.group.counts = counts
record.percent = percent
record.updated_at = now / 1000
if final then
  record.state, record.finished_at, record.eta = final, now / 1000, cjson.null
  if final == STATE.success then record.percent = 100 end
  if final == STATE.failure and failed > 0 then record.error = failed .. ' of ' .. parts .. ' parts failed.' end
  if final == STATE.failure and failed == 0 then record.error = 'A part was cancelled.' end
elseif counts[STATE.queued] < parts then
  record.state = STATE.running
  if record.started_at == cjson.null or record.started_at == nil then record.started_at = now / 1000 end
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
record.seq = seq
local out = cjson.encode(record)
redis.call('HSET', KEYS[2], 'rec', out, 'state', record.state, 'g:pub', now)
redis.call('HDEL', KEYS[2], 'g:dirty')
local ttl = final and ARGV[4] or ARGV[5]
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
for i = 9, #ARGV do redis.call('PUBLISH', ARGV[i], out) end
local result = {1, out, final or ''}
if final then
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    if redis.call('GET', key) == ARGV[2] then redis.call('DEL', key) end
  end
  redis.call('DEL', KEYS[4])
  redis.call('ZREM', KEYS[5], ARGV[2])
  -- The parts not final yet stop at their next update (queued ones: the caller revokes them).
  local all = redis.call('HGETALL', KEYS[3])
  for i = 1, #all, 2 do
    local state = cjson.decode(all[i + 1]).s
    if not FINAL[state] then
      redis.call('SET', ARGV[6] .. all[i], '1', 'PX', ARGV[7])
      table.insert(result, all[i])
      table.insert(result, state)
    end
  end
end
return result
