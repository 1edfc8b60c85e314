"""The Lua scripts that read and change the shared routing state, each one atomic on the Redis server.

Key layout (``{gw}`` is the hash tag: every key lands in one cluster slot, so a script may touch several):

- ``{gw}:v2:b:<backend>``  hash: ``cd`` cooldown until, ``rec`` 1 after a cooldown until a request succeeds,
  ``f`` consecutive failures, ``ej`` ejections, ``eju`` ejected until, ``g`` the single probe's hold until,
  ``gl`` the lease holding it, ``gk`` its kind (``h`` half-open breaker probe, ``c`` first try after a cooldown)
- ``{gw}:v2:l:<backend>``  sorted set of leases (slots taken: requests in flight, and spare slots replicas keep
  for their next request), scored by expiry
- ``{gw}:v2:a:<conversation>``  string: the backend the conversation's last turn went to, with a TTL
- ``{gw}:v2:w:<backend>``  set (with the lease TTL) while some replica has requests waiting for the backend
- ``{gw}:v2:events``  pub/sub channel: a backend's new state after a release that changed it or freed a slot
  somebody waits for, so the other replicas' views follow (and their waiters try for the slot)
- ``{gw}:v2:wants``  pub/sub channel: full backends a replica was refused a slot on (``<who> <backend>...``),
  so that replicas keeping spare slots there give them back

Times are the Redis server's own (``TIME``, milliseconds), never a replica's clock; scripts return durations
("cooling for 4.2 s"), which each replica adds to its own monotonic clock.

Versioning: the version is in every key and in each script's text (so in its SHA, which names it to EVALSHA).
A replica running v2 scripts during a rollout shares nothing with v1 replicas and corrupts nothing of theirs;
each family stays consistent among itself until the old one is gone. Bump ``VERSION`` whenever a script's
reading of a key changes.
"""

from __future__ import annotations

VERSION = "v2"  # v2: a lease may be a replica's spare slot; refusals announce the backends wanted

# Shared by the scripts: the server's time in milliseconds, and one backend's state read into a table.
_PRELUDE = """
-- llm-gateway shared routing state, script version VERSION
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function read(st, ls)
  redis.call('ZREMRANGEBYSCORE', ls, '-inf', now)  -- leases of replicas that stopped renewing them
  local h = redis.call('HMGET', st, 'cd', 'rec', 'f', 'ej', 'eju', 'g', 'gl', 'gk')
  return {
    cd = tonumber(h[1]) or 0, rec = tonumber(h[2]) or 0, f = tonumber(h[3]) or 0, ej = tonumber(h[4]) or 0,
    eju = tonumber(h[5]) or 0, g = tonumber(h[6]) or 0, gl = h[7] or '', gk = h[8] or '',
    n = redis.call('ZCARD', ls),
  }
end

-- Which single probe this backend needs before it takes ordinary traffic again: 'h' (circuit half-open),
-- 'c' (its cooldown just ended), '' (none), or false when it can take nothing now.
local function gate_needed(s)
  if s.ej > 0 and s.f >= 1 then
    if now < s.eju then return false end
    return 'h'
  end
  if now < s.cd then return false end
  if s.rec == 1 then return 'c' end
  return ''
end

local function snapshot(s)
  local held = 0
  if s.g > now then held = 1 end
  return {math.max(s.cd - now, 0), s.rec, s.f, s.ej, math.max(s.eju - now, 0), held, s.n}
end
"""

ACQUIRE = _PRELUDE + """
-- KEYS: affinity key, then state hash, lease set and waiting flag of each candidate, in the caller's order of
-- preference.
-- ARGV: lease id, lease ttl ms, affinity ttl ms, has affinity (0/1), n, channel for wants, who is asking, then
--       for each candidate: name, max (0: none), weight, priority, and a spare lease of the caller's on it ('').
-- A spare is a slot the caller holds already and no request of its uses: it counts as free for this call, and
-- if that candidate is picked the new lease takes its place (the count stays the same).
-- Takes the conversation's backend if it is eligible and no busier than the least busy eligible backend of
-- the best priority (the load guard), else the first eligible one in the caller's order. Returns
-- {index taken or 0, affinity outcome, the conversation's backend or '', snapshot of each candidate...}.
local lease, ttl, aff_ttl, has_aff, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1',
  tonumber(ARGV[5])
local function arg(i, field) return ARGV[7 + 5 * (i - 1) + field] end
local states, eligible, gates, spares, loads, full = {}, {}, {}, {}, {}, {}
local best_prio, best_load = nil, nil
for i = 1, n do
  local s = read(KEYS[3 * i - 1], KEYS[3 * i])
  states[i] = s
  local max, weight, prio, spare = tonumber(arg(i, 2)), tonumber(arg(i, 3)), tonumber(arg(i, 4)), arg(i, 5)
  -- (read() has dropped expired leases: a spare still in the set is alive)
  spares[i] = spare ~= '' and redis.call('ZSCORE', KEYS[3 * i], spare) and spare
  local taken = s.n
  if spares[i] then taken = taken - 1 end
  local gate = gate_needed(s)
  full[i] = max > 0 and taken >= max
  local ok = gate ~= false and (gate == '' or s.g <= now) and not full[i]
  eligible[i], gates[i], loads[i] = ok, gate, taken / weight
  if ok then
    if best_prio == nil or prio < best_prio then
      best_prio, best_load = prio, loads[i]
    elseif prio == best_prio and loads[i] < best_load then
      best_load = loads[i]
    end
  end
end
local pick, outcome, pinned = 0, '', false
if has_aff then
  pinned = redis.call('GET', KEYS[1])
  if not pinned then
    outcome = 'new'
  else
    outcome = 'moved'
    for i = 1, n do
      if arg(i, 1) == pinned and eligible[i] and tonumber(arg(i, 4)) == best_prio and loads[i] <= best_load then
        pick, outcome = i, 'hit'
      end
    end
  end
end
if pick == 0 then
  for i = 1, n do
    if eligible[i] then pick = i; break end
  end
end
if pick > 0 then
  local s = states[pick]
  if spares[pick] then
    redis.call('ZREM', KEYS[3 * pick], spares[pick])
  else
    s.n = s.n + 1
  end
  redis.call('ZADD', KEYS[3 * pick], now + ttl, lease)
  redis.call('PEXPIRE', KEYS[3 * pick], ttl * 2)
  if gates[pick] ~= '' then
    redis.call('HSET', KEYS[3 * pick - 1], 'g', now + ttl, 'gl', lease, 'gk', gates[pick])
    s.g = now + ttl
  end
  if has_aff then
    redis.call('SET', KEYS[1], arg(pick, 1), 'PX', aff_ttl)
  end
else
  -- Somebody will wait: releases of these backends are published until the waiters stop asking. And the
  -- full ones are wanted: replicas keeping spare slots there give them back (said again each half TTL while
  -- the waiting goes on, not on every refusal).
  local wanted = {}
  for i = 1, n do
    if full[i] and redis.call('PTTL', KEYS[3 * i + 1]) < ttl / 2 then table.insert(wanted, arg(i, 1)) end
    redis.call('SET', KEYS[3 * i + 1], '1', 'PX', ttl)
  end
  if #wanted > 0 then
    redis.call('PUBLISH', ARGV[6], ARGV[7] .. ' ' .. table.concat(wanted, ' '))
  end
end
local out = {pick, outcome, pinned or ''}
for i = 1, n do
  for _, v in ipairs(snapshot(states[i])) do table.insert(out, v) end
end
return out
"""

RELEASE = _PRELUDE + """
-- KEYS: state hash, lease set, waiting flag.  ARGV: lease id (may be ''), breaker effect, cooldown ms (0: none),
-- eject after
-- failures, eject base ms, eject max ms, backend name, channel to publish the new state on ('' for none), and
-- who is asking (the publisher skips its own message: it has the snapshot already).
-- Breaker effects: ok (a success or the client's own error: the backend is fine), failed (a connection error,
-- timeout or 5xx: counts toward ejection), neutral (decides nothing: throttled, or cancelled). A cooldown
-- (a 429, or a 503 with a retry hint) is kept whatever the effect. Frees the lease and, if this lease held
-- the probe, the probe. Returns the backend's snapshot.
local st, ls = KEYS[1], KEYS[2]
local lease, effect, cooldown = ARGV[1], ARGV[2], tonumber(ARGV[3])
local s = read(st, ls)
if lease ~= '' then
  s.n = s.n - redis.call('ZREM', ls, lease)
end
local was_probe = lease ~= '' and s.gl == lease and s.g > now
if was_probe then
  redis.call('HDEL', st, 'g', 'gl', 'gk')
  s.g = 0
end
if cooldown > 0 then
  s.cd = math.max(s.cd, now + cooldown)
  s.rec = 1
  redis.call('HSET', st, 'cd', s.cd, 'rec', 1)
end
local changed = was_probe or cooldown > 0 or effect == 'failed'
if effect == 'ok' then
  if s.f ~= 0 or s.ej ~= 0 or s.rec ~= 0 then
    redis.call('HSET', st, 'f', 0, 'ej', 0, 'rec', 0)
    s.f, s.ej, s.rec = 0, 0, 0
    changed = true
  end
elseif effect == 'failed' then
  s.f = s.f + 1
  if (was_probe and s.gk == 'h') or s.f >= tonumber(ARGV[4]) then
    s.ej = s.ej + 1
    s.eju = now + math.floor(math.min(tonumber(ARGV[5]) * 2 ^ (s.ej - 1), tonumber(ARGV[6])))
    redis.call('HSET', st, 'f', s.f, 'ej', s.ej, 'eju', s.eju)
  else
    redis.call('HSET', st, 'f', s.f)
  end
end
local snap = snapshot(s)
-- Published when other replicas need to know: the state changed, or a slot freed while someone waits.
if ARGV[8] ~= '' and (changed or (lease ~= '' and redis.call('EXISTS', KEYS[3]) == 1)) then
  redis.call('PUBLISH', ARGV[8], ARGV[7] .. ' ' .. table.concat(snap, ' ') .. ' ' .. ARGV[9])
end
return snap
"""

RENEW = _PRELUDE + """
-- KEYS: state hash and lease set of each lease's backend.  ARGV: lease ttl ms, then one lease id per pair.
-- Extends the leases this replica still holds (and the probe, if one of them holds it). Returns 1 for each
-- lease still there, 0 for one that expired (Redis was away, or this replica stalled): it is not taken back.
local ttl = tonumber(ARGV[1])
local alive = {}
for i = 2, #ARGV do
  local st, ls, lease = KEYS[2 * i - 3], KEYS[2 * i - 2], ARGV[i]
  local expiry = tonumber(redis.call('ZSCORE', ls, lease))
  alive[i - 1] = 0
  if expiry and expiry > now then
    alive[i - 1] = 1
    redis.call('ZADD', ls, now + ttl, lease)
    redis.call('PEXPIRE', ls, ttl * 2)
    if redis.call('HGET', st, 'gl') == lease then
      redis.call('HSET', st, 'g', now + ttl)
    end
  end
end
return alive
"""

SNAPSHOT = _PRELUDE + """
-- KEYS: state hash and lease set of each backend.  Returns their snapshots, one after the other.
local out = {}
for i = 1, #KEYS / 2 do
  for _, v in ipairs(snapshot(read(KEYS[2 * i - 1], KEYS[2 * i]))) do table.insert(out, v) end
end
return out
"""

ACQUIRE, RELEASE, RENEW, SNAPSHOT = (s.replace("VERSION", VERSION) for s in (ACQUIRE, RELEASE, RENEW, SNAPSHOT))

# Fields of a snapshot, in the order the scripts return them.
SNAPSHOT_FIELDS = ("cooling_ms", "recovering", "failures", "ejections", "ejected_ms", "probe_held", "leases")
