# A pymodbus TCP server for driver-bridge's tests (testkit::modbus). Started as
#   python -c <this> <port> <presets as JSON: {"3": {"addr": value, ...}, "4": {...}}>
# It serves holding (3) and input (4) registers 0-999 of unit 1, and takes commands on stdin,
# one per line, answering each on stdout:
#   set <function> <address> <word> [<word> ...]  ->  ok
#   get <function> <address> <count>             ->  <word> <word> ...
import asyncio
import json
import sys

from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import StartAsyncTcpServer

port = int(sys.argv[1])
presets = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}

device = ModbusDeviceContext(
    hr=ModbusSequentialDataBlock(0, [0] * 1000),
    ir=ModbusSequentialDataBlock(0, [0] * 1000),
)
for function, words in presets.items():
    for address, value in words.items():
        device.setValues(int(function), int(address), [int(value)])
context = ModbusServerContext(devices=device, single=True)


async def control():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        parts = line.decode().split()
        try:
            if parts[0] == "set":
                device.setValues(int(parts[1]), int(parts[2]), [int(w) for w in parts[3:]])
                answer = "ok"
            elif parts[0] == "get":
                values = device.getValues(int(parts[1]), int(parts[2]), int(parts[3]))
                answer = " ".join(str(v) for v in values)
            else:
                answer = "error unknown command"
        except Exception as e:  # a bad line must not stop the server
            answer = f"error {e}"
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()


async def main():
    asyncio.get_running_loop().create_task(control())
    await StartAsyncTcpServer(context, address=("127.0.0.1", port))


asyncio.run(main())
