// Parse PromQL expressions with the Prometheus project's own grammar (@prometheus-io/lezer-promql,
// what the Prometheus UI uses). stdin: a JSON list of expressions; stdout: a JSON list of
// [expression, error position] for each that does not parse. Used by
// tests/unit/test_observability_assets.py when node and the package (NODE_PATH) are present.
const { parser } = require("@prometheus-io/lezer-promql");
let input = "";
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const problems = [];
  for (const expr of JSON.parse(input)) {
    let error = -1;
    parser.parse(expr).iterate({ enter: (node) => {
      if (node.type.isError && error < 0) { error = node.from; }
    } });
    if (error >= 0) { problems.push([expr, error]); }
  }
  process.stdout.write(JSON.stringify(problems));
});
