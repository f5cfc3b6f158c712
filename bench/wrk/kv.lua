-- wrk script driving the same key-value workload against ferrokv's HTTP API
-- or etcd's v3 JSON gateway. Used by bench/compare.sh; configured through
-- environment variables (wrk passes no options to scripts except after --):
--
--   KV_SYSTEM      ferrokv | etcd
--   KV_OP          put | get | stale | mix | fill
--                  get   = linearizable read (ferrokv default, etcd range default)
--                  stale = ferrokv ?consistency=stale, etcd "serializable": true
--                  mix   = 50% put, 50% linearizable get
--   KV_KEYS        size of the key space (default 10000)
--   KV_VALUE_SIZE  bytes per value (default 256)
--
-- Keys are bench/<i>, zero-padded to the width of KEYS-1 exactly as
-- `ferrokv bench` names them, drawn uniformly at random. Each wrk connection
-- is closed-loop with keep-alive: the next request leaves when the previous
-- answer is in. done() prints one line `WRKJSON {...}` with the counts and
-- latency percentiles (microseconds) for compare.sh to parse.

local system = os.getenv("KV_SYSTEM") or "ferrokv"
local op = os.getenv("KV_OP") or "put"
local nkeys = tonumber(os.getenv("KV_KEYS") or "10000")
local value_size = tonumber(os.getenv("KV_VALUE_SIZE") or "256")

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144) % 64
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = b64chars:sub(c1 + 1, c1 + 1) .. b64chars:sub(c2 + 1, c2 + 1)
      .. (b and b64chars:sub(c3 + 1, c3 + 1) or "=")
      .. (c and b64chars:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

local width = #tostring(math.max(nkeys - 1, 0))
local keyfmt = "bench/%0" .. width .. "d"

-- A printable value, the same bytes for every write (as `ferrokv bench`).
local value = string.rep("x", value_size)

local requests = {}  -- per key: {put=..., get=..., stale=...} prebuilt requests
local thread_id = 0

local counter = 1
function setup(thread)
  thread:set("thread_id", counter - 1)
  counter = counter + 1
end

local function build(i)
  local key = string.format(keyfmt, i)
  local r = {}
  if system == "etcd" then
    local k64 = base64(key)
    local v64 = base64(value)
    local h = { ["Content-Type"] = "application/json" }
    r.put = wrk.format("POST", "/v3/kv/put", h,
      '{"key":"' .. k64 .. '","value":"' .. v64 .. '"}')
    r.get = wrk.format("POST", "/v3/kv/range", h, '{"key":"' .. k64 .. '"}')
    r.stale = wrk.format("POST", "/v3/kv/range", h,
      '{"key":"' .. k64 .. '","serializable":true}')
  else
    local h = { ["Content-Type"] = "application/octet-stream" }
    r.put = wrk.format("PUT", "/v1/kv/" .. key, h, value)
    r.get = wrk.format("GET", "/v1/kv/" .. key, nil, nil)
    r.stale = wrk.format("GET", "/v1/kv/" .. key .. "?consistency=stale", nil, nil)
  end
  return r
end

function init(args)
  thread_id = tonumber(wrk.thread:get("thread_id")) or 0
  math.randomseed(os.time() * 1000 + thread_id * 7919)
  for i = 0, nkeys - 1 do
    requests[i] = build(i)
  end
end

function request()
  local r = requests[math.random(0, nkeys - 1)]
  if op == "put" then return r.put end
  if op == "get" then return r.get end
  if op == "stale" then return r.stale end
  if math.random() < 0.5 then return r.put end
  return r.get
end

-- KV_DEBUG=1 prints the first few non-2xx answers (parsing every answer
-- costs wrk time, so this is off for measurements).
if os.getenv("KV_DEBUG") == "1" then
  local shown = 0
  response = function(status, headers, body)
    if (status < 200 or status >= 300) and shown < 5 then
      shown = shown + 1
      io.stderr:write("status " .. status .. ": " .. tostring(body) .. "\n")
    end
  end
end

function done(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p99_9":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
