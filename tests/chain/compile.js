// Compiles Solidity with solc-js (the wasm build in node_modules, no download at run time).
// stdin: {"sources": {"Name.sol": "<source>"}}; stdout: solc's standard-JSON output.
// The EVM target is "paris" because ganache 7.9 does not run the PUSH0/MCOPY opcodes that
// later targets emit.
const solc = require("solc");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const { sources } = JSON.parse(input);
  const request = {
    language: "Solidity",
    sources: Object.fromEntries(Object.entries(sources).map(([name, content]) => [name, { content }])),
    settings: {
      evmVersion: "paris",
      optimizer: { enabled: true, runs: 200 },
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
    },
  };
  process.stdout.write(solc.compile(JSON.stringify(request)));
});
