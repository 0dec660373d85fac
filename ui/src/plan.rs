//! The plan view: the build plan a worker posted, read as a graph (nodes are
//! packages, edges dependencies) and laid out in layers on the server, drawn
//! as SVG. Understood shapes (any other object gets a note, not a drawing):
//!
//! - `{"nodes": [..], "edges": [..]}`: a node is a name or an object with
//!   `id`, `name` or `package` (and optionally `version`); an edge is
//!   `[from, to]` or an object with `from`/`to` or `source`/`target`, drawn
//!   as given: `from` above `to` (read it as "from is built before to").
//! - `{"packages": [..]}` (or `nodes` without `edges`): objects naming a
//!   package as above, with their dependencies in `deps`, `dependencies`,
//!   `requires` or `depends_on` (names, or objects naming one): each
//!   dependency is drawn above the package that needs it.
//! - `{"graph": {..}}` (or `dependencies`, `deps`): a map from a package to
//!   the list of its dependencies, drawn the same way.
//!
//! A dependency that names no node of the plan becomes a node of its own,
//! marked as outside the plan. Layering is by longest path from the top;
//! edges that close a cycle are found by a depth-first search in document
//! order, drawn dashed and ignored for the layering. At most [`MAX_NODES`]
//! nodes and [`MAX_EDGES`] edges are read, and [`MAX_DRAWN`] nodes drawn.

use std::collections::HashMap;

use askama::Template;
use serde_json::Value;

use crate::format::clip;
use crate::pages::{render, Chrome};

/// Nodes read from a plan; past it the rest are counted, not laid out.
pub const MAX_NODES: usize = 5_000;
/// Edges read from a plan.
pub const MAX_EDGES: usize = 20_000;
/// Nodes drawn; the note under the graph says how many more there are.
pub const MAX_DRAWN: usize = 150;
/// Nodes side by side before a layer wraps onto another row.
const PER_ROW: usize = 8;
const NODE_W: u32 = 150;
const NODE_H: u32 = 36;
const GAP_X: u32 = 22;
const ROW_H: u32 = 78;
const MARGIN: u32 = 16;
/// Characters of a package name shown in a node (the full name is its tooltip).
const LABEL: usize = 19;

/// One package of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanNode {
    pub name: String,
    pub version: Option<String>,
    /// Named only as a dependency, not as a node of the plan.
    pub external: bool,
}

/// The plan as a graph: nodes in document order, edges as index pairs
/// (`from` drawn above `to`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanGraph {
    pub nodes: Vec<PlanNode>,
    pub edges: Vec<(usize, usize)>,
    /// Nodes or edges past the read caps.
    pub nodes_cut: usize,
    pub edges_cut: usize,
    /// Which shape was read (`nodes/edges`, `packages`, `graph`).
    pub shape: &'static str,
}

fn name_of(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s.as_str()),
        Value::Object(o) => ["id", "name", "package"].iter().find_map(|k| o.get(*k).and_then(Value::as_str)),
        _ => None,
    }
    .map(str::trim)
    .filter(|s| !s.is_empty())
}

fn deps_of(v: &Value) -> Vec<&str> {
    ["deps", "dependencies", "requires", "depends_on"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_array))
        .map(|a| a.iter().filter_map(name_of).collect())
        .unwrap_or_default()
}

struct Builder {
    g: PlanGraph,
    index: HashMap<String, usize>,
    /// Names past the node cap (counted once each).
    cut: std::collections::HashSet<String>,
}

impl Builder {
    fn new(shape: &'static str) -> Self {
        Builder { g: PlanGraph { shape, ..Default::default() }, index: HashMap::new(), cut: Default::default() }
    }

    /// The node called `name`, added (as external when `external`) if new
    /// and there is room.
    fn node(&mut self, name: &str, version: Option<&str>, external: bool) -> Option<usize> {
        if let Some(&i) = self.index.get(name) {
            let n = &mut self.g.nodes[i];
            if !external && n.external {
                n.external = false;
                n.version = version.map(str::to_string);
            }
            return Some(i);
        }
        if self.g.nodes.len() == MAX_NODES {
            if self.cut.insert(name.to_string()) {
                self.g.nodes_cut += 1;
            }
            return None;
        }
        let i = self.g.nodes.len();
        self.g.nodes.push(PlanNode { name: name.to_string(), version: version.map(str::to_string), external });
        self.index.insert(name.to_string(), i);
        Some(i)
    }

    fn edge(&mut self, from: Option<usize>, to: Option<usize>) {
        match (from, to) {
            (Some(a), Some(b)) if a != b && self.g.edges.len() < MAX_EDGES => self.g.edges.push((a, b)),
            (Some(a), Some(b)) if a != b => self.g.edges_cut += 1,
            _ => {}
        }
    }

    /// An entry naming a package and, maybe, its dependencies.
    fn entry(&mut self, v: &Value) {
        let Some(name) = name_of(v) else { return };
        let me = self.node(name, v.get("version").and_then(Value::as_str), false);
        for d in deps_of(v) {
            let dep = self.node(d, None, true);
            self.edge(dep, me);
        }
    }
}

/// Read a posted plan as a graph, or `None` when it has none of the
/// understood shapes.
pub fn parse(doc: &Value) -> Option<PlanGraph> {
    let list = |k: &str| doc.get(k).and_then(Value::as_array);
    if let (Some(nodes), Some(edges)) = (list("nodes"), list("edges")) {
        let mut b = Builder::new("nodes/edges");
        for n in nodes {
            b.entry(n);
        }
        for e in edges {
            let (from, to) = match e {
                Value::Array(pair) if pair.len() == 2 => (name_of(&pair[0]), name_of(&pair[1])),
                Value::Object(o) => (
                    o.get("from").or_else(|| o.get("source")).and_then(name_of),
                    o.get("to").or_else(|| o.get("target")).and_then(name_of),
                ),
                _ => (None, None),
            };
            if let (Some(f), Some(t)) = (from, to) {
                let (f, t) = (b.node(f, None, true), b.node(t, None, true));
                b.edge(f, t);
            }
        }
        return Some(b.g);
    }
    if let Some(entries) = list("packages").or_else(|| list("nodes")) {
        let mut b = Builder::new("packages");
        for e in entries {
            b.entry(e);
        }
        return Some(b.g);
    }
    let map = ["graph", "dependencies", "deps"].iter().find_map(|k| doc.get(*k).and_then(Value::as_object))?;
    let mut b = Builder::new("graph");
    for (name, deps) in map {
        let me = b.node(name, None, false);
        for d in deps.as_array().into_iter().flatten().filter_map(name_of) {
            let dep = b.node(d, None, true);
            b.edge(dep, me);
        }
    }
    Some(b.g)
}

/// Each node's layer (longest path from a node with no edge into it), and
/// which edges close a cycle (ignored for the layering).
pub fn layers(g: &PlanGraph) -> (Vec<usize>, Vec<bool>) {
    let n = g.nodes.len();
    let mut out: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
    for (e, &(a, b)) in g.edges.iter().enumerate() {
        out[a].push((b, e));
    }
    // Depth-first search in document order, without recursion: an edge to a
    // node still on the stack closes a cycle.
    let (mut state, mut back) = (vec![0u8; n], vec![false; g.edges.len()]);
    let mut order = Vec::with_capacity(n);
    for root in 0..n {
        if state[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        state[root] = 1;
        while let Some(top) = stack.last_mut() {
            let (v, next) = *top;
            if let Some(&(w, e)) = out[v].get(next) {
                top.1 += 1;
                match state[w] {
                    0 => {
                        state[w] = 1;
                        stack.push((w, 0));
                    }
                    1 => back[e] = true,
                    _ => {}
                }
            } else {
                state[v] = 2;
                order.push(v);
                stack.pop();
            }
        }
    }
    // Reverse post-order is a topological order of the edges left.
    let mut layer = vec![0usize; n];
    for &v in order.iter().rev() {
        for &(w, e) in &out[v] {
            if !back[e] {
                layer[w] = layer[w].max(layer[v] + 1);
            }
        }
    }
    (layer, back)
}

/// One drawn node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeBox {
    pub name: String,
    pub label: String,
    pub version: String,
    pub x: u32,
    pub y: u32,
    /// The status class of its latest build (`succeeded`, `failed`, ...).
    pub status: String,
    pub external: bool,
}

/// One drawn edge: its SVG path (numbers only) and whether it closes a cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgePath {
    pub d: String,
    pub back: bool,
}

/// The laid-out graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Drawing {
    pub width: u32,
    pub height: u32,
    pub nodes: Vec<NodeBox>,
    pub edges: Vec<EdgePath>,
    /// Nodes of the plan not drawn (past [`MAX_DRAWN`] or the read cap).
    pub not_drawn: usize,
    pub cycle_edges: usize,
    pub layers: usize,
}

/// Lay `g` out: layers top to bottom, each ordered by document order and
/// then by where its nodes' predecessors sit, wrapped at [`PER_ROW`].
/// `status` names a node's latest build state for its colour.
pub fn layout(g: &PlanGraph, status: &dyn Fn(&PlanNode) -> Option<String>) -> Drawing {
    let (layer, back) = layers(g);
    // The nodes drawn: the first MAX_DRAWN by (layer, document order).
    let mut by_rank: Vec<usize> = (0..g.nodes.len()).collect();
    by_rank.sort_by_key(|&i| (layer[i], i));
    by_rank.truncate(MAX_DRAWN);
    let n_layers = by_rank.last().map_or(0, |&i| layer[i] + 1);
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); n_layers];
    for &i in &by_rank {
        rows[layer[i]].push(i);
    }
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); g.nodes.len()];
    for (e, &(a, b)) in g.edges.iter().enumerate() {
        if !back[e] {
            preds[b].push(a);
        }
    }
    // Barycentre ordering: a node goes under the mean slot of its drawn
    // predecessors (ties and orphans keep document order).
    let mut slot: HashMap<usize, f64> = HashMap::new();
    for row in rows.iter_mut() {
        let key = |i: usize| {
            let ps: Vec<f64> = preds[i].iter().filter_map(|p| slot.get(p).copied()).collect();
            if ps.is_empty() {
                f64::MAX
            } else {
                ps.iter().sum::<f64>() / ps.len() as f64
            }
        };
        let mut keyed: Vec<(f64, usize)> = row.iter().map(|&i| (key(i), i)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        *row = keyed.into_iter().map(|(_, i)| i).collect();
        for (k, &i) in row.iter().enumerate() {
            slot.insert(i, k as f64);
        }
    }
    let widest = rows.iter().map(|r| r.len().min(PER_ROW)).max().unwrap_or(0) as u32;
    let width = (MARGIN * 2 + widest * (NODE_W + GAP_X)).max(320);
    let mut pos: HashMap<usize, (u32, u32)> = HashMap::new();
    let mut nodes = Vec::with_capacity(by_rank.len());
    let mut line = 0u32;
    for row in &rows {
        for chunk in row.chunks(PER_ROW) {
            let span = chunk.len() as u32 * (NODE_W + GAP_X) - GAP_X;
            let x0 = (width - span) / 2;
            let y = MARGIN + line * ROW_H;
            for (k, &i) in chunk.iter().enumerate() {
                let x = x0 + k as u32 * (NODE_W + GAP_X);
                pos.insert(i, (x, y));
                let node = &g.nodes[i];
                nodes.push(NodeBox {
                    name: node.name.clone(),
                    label: clip(&node.name, LABEL),
                    version: node.version.clone().unwrap_or_default(),
                    x,
                    y,
                    status: status(node).unwrap_or_else(|| "none".into()),
                    external: node.external,
                });
            }
            line += 1;
        }
    }
    let height = (MARGIN * 2 + line.saturating_sub(1) * ROW_H + NODE_H).max(80);
    let edges = g
        .edges
        .iter()
        .zip(&back)
        .filter_map(|(&(a, b), &is_back)| {
            let (&(ax, ay), &(bx, by)) = (pos.get(&a)?, pos.get(&b)?);
            let (x1, y1, x2, y2) = (ax + NODE_W / 2, ay + NODE_H, bx + NODE_W / 2, by);
            let d = if y2 > y1 {
                let mid = (y1 + y2) / 2;
                format!("M{x1} {y1} C{x1} {mid} {x2} {mid} {x2} {y2}")
            } else {
                // Up or sideways (a cycle's closing edge): loop around.
                let (ya, yb) = (y1 - NODE_H / 2, y2 + NODE_H / 2);
                let side = x1.max(x2) + NODE_W / 2 + 12;
                format!("M{} {ya} C{side} {ya} {side} {yb} {} {yb}", x1 + NODE_W / 2, x2 + NODE_W / 2)
            };
            Some(EdgePath { d, back: is_back })
        })
        .collect();
    Drawing {
        width,
        height,
        nodes,
        edges,
        not_drawn: g.nodes.len() - by_rank.len() + g.nodes_cut,
        cycle_edges: back.iter().filter(|b| **b).count(),
        layers: n_layers,
    }
}

/// What the plan page shows.
#[derive(Debug, Clone)]
pub enum PlanView {
    /// No plan posted yet, or the asked version is not kept.
    Missing(String),
    /// A plan in none of the understood shapes: its top-level keys.
    Unknown {
        keys: Vec<String>,
    },
    Graph {
        drawing: Drawing,
        edges: usize,
        edges_cut: usize,
        shape: &'static str,
    },
}

/// The plan's version facts for the page head.
#[derive(Debug, Clone, Default)]
pub struct PlanMeta {
    pub version: u64,
    pub sha256: String,
    pub size: String,
    pub at: String,
    pub versions: Vec<u64>,
}

/// The view of a posted document.
pub fn view(doc: &Value, status: &dyn Fn(&PlanNode) -> Option<String>) -> PlanView {
    match parse(doc) {
        Some(g) => PlanView::Graph {
            drawing: layout(&g, status),
            edges: g.edges.len(),
            edges_cut: g.edges_cut,
            shape: g.shape,
        },
        None => PlanView::Unknown {
            keys: doc.as_object().map(|o| o.keys().take(20).map(|k| clip(k, 40)).collect()).unwrap_or_default(),
        },
    }
}

#[derive(Template)]
#[template(path = "plan.html")]
struct PlanPage<'a> {
    chrome: &'a Chrome,
    meta: Option<&'a PlanMeta>,
    view: &'a PlanView,
    node_w: u32,
    node_h: u32,
}

/// The plan page: version picker, the graph, its legend and notes.
pub fn plan_page(chrome: &Chrome, meta: Option<&PlanMeta>, view: &PlanView) -> String {
    render(&PlanPage { chrome, meta, view, node_w: NODE_W, node_h: NODE_H })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names(g: &PlanGraph) -> Vec<&str> {
        g.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn reads_the_three_shapes_and_refuses_others() {
        let a = json!({"nodes": ["numpy", {"id": "pandas", "version": "2.2"}], "edges": [["numpy", "pandas"], {"source": "pandas", "target": "x"}]});
        let g = parse(&a).expect("nodes/edges");
        assert_eq!(
            (names(&g), g.edges.clone(), g.shape),
            (vec!["numpy", "pandas", "x"], vec![(0, 1), (1, 2)], "nodes/edges")
        );
        assert!(g.nodes[2].external && g.nodes[1].version.as_deref() == Some("2.2"));

        let b = json!({"packages": [{"name": "pandas", "version": "2.2", "deps": ["numpy", {"name": "tzdata"}]}, {"package": "numpy", "version": "1.26"}]});
        let g = parse(&b).expect("packages");
        assert_eq!(names(&g), ["pandas", "numpy", "tzdata"]);
        assert_eq!(g.edges, [(1, 0), (2, 0)], "a dependency is drawn above its dependent");
        assert!(!g.nodes[1].external && g.nodes[1].version.as_deref() == Some("1.26"), "named later as a node");
        assert!(g.nodes[2].external);

        let c = json!({"graph": {"numpy": [], "scipy": ["numpy"]}});
        let g = parse(&c).expect("graph");
        assert_eq!((names(&g), g.edges.clone()), (vec!["numpy", "scipy"], vec![(0, 1)]));

        assert!(parse(&json!({"steps": [1, 2]})).is_none());
        assert!(parse(&json!([1])).is_none());
        let v = view(&json!({"a<x>": 2, "b": 1}), &|_| None);
        assert!(matches!(v, PlanView::Unknown { ref keys } if keys == &["a<x>".to_string(), "b".to_string()]));
    }

    #[test]
    fn layers_by_longest_path_and_survives_cycles() {
        // a → b → c, a → c: c is two below a, not one.
        let g = parse(&json!({"nodes": ["a", "b", "c"], "edges": [["a", "c"], ["a", "b"], ["b", "c"]]})).unwrap();
        let (layer, back) = layers(&g);
        assert_eq!((layer, back), (vec![0, 1, 2], vec![false; 3]));
        // A cycle a → b → c → a, and a self-loop that is never stored.
        let g = parse(&json!({"nodes": ["a", "b", "c"], "edges": [["a", "b"], ["b", "c"], ["c", "a"], ["b", "b"]]}))
            .unwrap();
        assert_eq!(g.edges.len(), 3, "a self-loop is dropped");
        let (layer, back) = layers(&g);
        assert_eq!(back, [false, false, true], "the edge closing the cycle, in document order");
        assert_eq!(layer, [0, 1, 2]);
        let d = layout(&g, &|_| None);
        assert_eq!((d.nodes.len(), d.edges.len(), d.cycle_edges), (3, 3, 1));
        assert!(d.edges.iter().filter(|e| e.back).count() == 1);
        // Layout is stable: the same input, the same drawing.
        assert_eq!(layout(&g, &|_| None), d);
    }

    #[test]
    fn bounded_in_what_it_reads_and_draws() {
        let n = MAX_NODES + 10;
        let nodes: Vec<Value> = (0..n).map(|i| json!(format!("p{i}"))).collect();
        // A long chain, plus a fan-out from the first.
        let mut edges: Vec<Value> = (1..n).map(|i| json!([format!("p{}", i - 1), format!("p{i}")])).collect();
        edges.extend((2..MAX_EDGES).map(|i| json!(["p0", format!("p{}", i % n)])));
        let g = parse(&json!({"nodes": nodes, "edges": edges})).unwrap();
        assert_eq!((g.nodes.len(), g.nodes_cut), (MAX_NODES, 10), "10 nodes past the cap, each counted once");
        assert!(g.edges.len() <= MAX_EDGES && g.edges_cut > 0);
        let d = layout(&g, &|_| None);
        assert_eq!(d.nodes.len(), MAX_DRAWN);
        assert_eq!(d.not_drawn, n - MAX_DRAWN, "the note counts every node left out");
        assert!(d.edges.len() <= g.edges.len());
        assert!(d.nodes.iter().all(|b| b.x + NODE_W <= d.width && b.y + NODE_H <= d.height));
    }

    #[test]
    fn wide_layers_wrap_and_children_sit_under_parents() {
        let mut deps = serde_json::Map::new();
        for i in 0..20 {
            deps.insert(format!("leaf{i:02}"), json!([]));
        }
        deps.insert("top".into(), json!(["leaf19"]));
        let g = parse(&json!({ "graph": deps })).unwrap();
        let d = layout(&g, &|n| (n.name == "top").then(|| "failed".to_string()));
        let rows: std::collections::BTreeSet<u32> = d.nodes.iter().map(|b| b.y).collect();
        assert_eq!(rows.len(), 4, "20 leaves wrap onto 3 rows, then the dependent's row");
        assert!(d.width <= MARGIN * 2 + PER_ROW as u32 * (NODE_W + GAP_X));
        let top = d.nodes.iter().find(|b| b.name == "top").unwrap();
        assert_eq!((top.status.as_str(), d.layers), ("failed", 2));
        assert_eq!(d.edges.len(), 1);
    }

    #[test]
    fn the_page_escapes_names_and_links_nodes() {
        let chrome = Chrome {
            node_id: 1,
            role: "leader".into(),
            leader: "1".into(),
            term: 1,
            page: "plan",
            title: "Plan".into(),
            poll_seconds: 2,
            nodes: vec![],
            removed: false,
            read_only: false,
        };
        let v = view(&json!({"graph": {"<script>x": ["a\"b"]}}), &|_| None);
        let html = plan_page(&chrome, Some(&PlanMeta { version: 3, versions: vec![2, 3], ..Default::default() }), &v);
        assert!(!html.contains("<script>x") && html.contains("&#60;script&#62;x"));
        assert!(!html.contains("a\"b"));
        assert!(html.contains("<svg") && html.contains("class=\"edge"));
        assert!(html.contains("/verifier-engine-room/builds/%3Cscript%3Ex"));
    }
}
