//! JSON values whose strings may be runtime expressions (`with:`, `set:`, `emit.event`...).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Env, Expr, ExprError, ExprErrorKind, Limits, Vars, strip};

/// How the workflow's runtime expressions are written (`evaluate.mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Expressions are written `${ ... }`; any other string is a literal.
    #[default]
    Strict,
    /// Fields that hold only an expression may omit `${ }` ([`Expr::compile_field`]). In
    /// templates, still only `${ }` strings are expressions, but one that does not compile, or
    /// whose evaluation raises a jq error, stands for its own text, as the DSL specifies for
    /// loose mode. Refused builtins and exceeded limits still fail.
    Loose,
}

/// A failure to compile a template: the error and where its string is in the template.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct TemplateError {
    /// JSON pointer of the string inside the template value (`""` for the value itself).
    pub pointer: String,
    /// Why the expression there does not compile.
    pub error: ExprError,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            write!(f, "{}", self.error.message)
        } else {
            write!(f, "at {}: {}", self.pointer, self.error.message)
        }
    }
}

/// A JSON value whose `${ ... }` strings are runtime expressions, compiled once. Object keys
/// are never expressions. Subtrees without expressions are kept as plain values.
#[derive(Clone, Debug)]
pub struct Template {
    root: Node,
}

#[derive(Clone, Debug)]
enum Node {
    Const(Value),
    /// An expression; in loose mode, with the string it was written as, which stands for it
    /// when its evaluation raises a jq error.
    Expr(Expr, Option<String>),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// Escapes one JSON pointer token.
fn token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl Template {
    /// Compiles `value`: each string that is `${ ... }` becomes an expression reading the
    /// variables `names` (without `$`).
    pub fn compile(value: &Value, mode: Mode, names: &[&str]) -> Result<Template, TemplateError> {
        Self::compile_with(value, mode, names, &Limits::default())
    }

    /// [`Template::compile`] with the source length limit of `limits`.
    pub fn compile_with(value: &Value, mode: Mode, names: &[&str], limits: &Limits) -> Result<Template, TemplateError> {
        let mut pointer = String::new();
        Ok(Template { root: node(value, mode, names, limits, &mut pointer)? })
    }

    /// A template that is `value` as it is.
    pub fn constant(value: Value) -> Template {
        Template { root: Node::Const(value) }
    }

    /// Whether the template holds no expression (its value is known without evaluating).
    pub fn is_constant(&self) -> bool {
        matches!(self.root, Node::Const(_))
    }

    /// Whether any expression of the template mentions `$name` (name without `$`).
    pub fn uses(&self, name: &str) -> bool {
        fn go(node: &Node, name: &str) -> bool {
            match node {
                Node::Const(_) => false,
                Node::Expr(e, _) => e.uses(name),
                Node::Array(items) => items.iter().any(|n| go(n, name)),
                Node::Object(fields) => fields.iter().any(|(_, n)| go(n, name)),
            }
        }
        go(&self.root, name)
    }

    /// The value with every expression replaced by its result ([`Expr::eval`]'s output rule).
    /// The input and the variables are converted once for the whole template; each expression
    /// has the full fuel of `limits`, and the outputs of all of them share
    /// [`Limits::max_output_bytes`].
    pub fn eval(&self, input: &Value, vars: &Vars, limits: &Limits) -> Result<Value, ExprError> {
        if let Node::Const(value) = &self.root {
            return Ok(value.clone());
        }
        let mut env = Env::new(vars, limits);
        let result = env.input(input).and_then(|input| eval(&self.root, &input, &mut env));
        result.map_err(|e| env.mask(e))
    }
}

fn node(
    value: &Value,
    mode: Mode,
    names: &[&str],
    limits: &Limits,
    pointer: &mut String,
) -> Result<Node, TemplateError> {
    Ok(match value {
        Value::String(s) => match strip(s) {
            None => Node::Const(value.clone()),
            Some(source) => match Expr::compile_with(source, names, limits) {
                Ok(expr) => Node::Expr(expr, (mode == Mode::Loose).then(|| s.clone())),
                Err(e) if mode == Mode::Loose && e.kind == ExprErrorKind::Syntax => Node::Const(value.clone()),
                Err(error) => return Err(TemplateError { pointer: pointer.clone(), error }),
            },
        },
        Value::Array(items) => {
            let mut nodes = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push_str(&format!("/{i}"));
                nodes.push(node(item, mode, names, limits, pointer)?);
                pointer.truncate(len);
            }
            if nodes.iter().all(|n| matches!(n, Node::Const(_))) {
                Node::Const(value.clone())
            } else {
                Node::Array(nodes)
            }
        }
        Value::Object(fields) => {
            let mut nodes = Vec::with_capacity(fields.len());
            for (key, item) in fields {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&token(key));
                nodes.push((key.clone(), node(item, mode, names, limits, pointer)?));
                pointer.truncate(len);
            }
            if nodes.iter().all(|(_, n)| matches!(n, Node::Const(_))) {
                Node::Const(value.clone())
            } else {
                Node::Object(nodes)
            }
        }
        _ => Node::Const(value.clone()),
    })
}

fn eval(node: &Node, input: &super::Jv, env: &mut Env<'_>) -> Result<Value, ExprError> {
    Ok(match node {
        Node::Const(value) => value.clone(),
        Node::Expr(expr, fallback) => match (expr.eval_in(input.clone(), env), fallback) {
            (Err(e), Some(text)) if e.kind == ExprErrorKind::Runtime => Value::String(text.clone()),
            (result, _) => result?,
        },
        Node::Array(items) => Value::Array(items.iter().map(|n| eval(n, input, env)).collect::<Result<_, _>>()?),
        Node::Object(fields) => {
            let mut out = serde_json::Map::with_capacity(fields.len());
            for (key, n) in fields {
                out.insert(key.clone(), eval(n, input, env)?);
            }
            Value::Object(out)
        }
    })
}
