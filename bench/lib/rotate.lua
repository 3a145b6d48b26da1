-- wrk script: each request reads the cached data of one of many devices, chosen at
-- random. Arguments: KEYS_FILE (one device key per line) and the request path.
--   wrk -s bench/lib/rotate.lua URL -- KEYS_FILE /v1/apps/s1/background-fetch
local keys = {}
local path = "/"

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then keys[#keys + 1] = line end
  end
  path = args[2] or path
  -- Each thread has its own Lua state: seed each differently.
  local addr = tostring({}):match("0x(%x+)")
  math.randomseed(os.time() + (addr and tonumber(addr, 16) % 100000 or 0))
end

function request()
  local key = keys[math.random(#keys)]
  return wrk.format("GET", path, { ["authorization"] = "Bearer " .. key })
end
