//! Compiles the wire schema in `schema/` with the pure-Rust `protox` compiler (no system
//! `protoc`) and generates, next to prost's messages, the typed gRPC method table.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::rc::Rc;

use prost_build::{Service, ServiceGenerator};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schema_dir = PathBuf::from("schema");
    println!("cargo:rerun-if-changed=schema");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&schema_dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&schema_dir])?;

    let tables = Rc::new(RefCell::new(Vec::new()));
    let mut config = prost_build::Config::new();
    config
        .bytes(["."])
        .btree_map(["."])
        // Every response carries these large optional messages inline (a region error is
        // ~600 bytes, execution details ~700) although they are almost always absent; boxing
        // them keeps responses small, so moving one through queues and channels is cheap.
        .boxed("region_error")
        .boxed("exec_details_v2")
        .boxed("exec_details")
        .include_file("schema.rs")
        .service_generator(Box::new(MethodTableGenerator {
            tables: Rc::clone(&tables),
        }));
    // Key errors (~900 bytes, with the lock info inside) sit inline in every transactional
    // response and in every raw pair; they are rare, so they are boxed too. Found from the
    // schema so that new fields of these types are covered.
    for path in singular_fields_of_type(&descriptors, &[".kvrpcpb.KeyError", ".kvrpcpb.LockInfo"]) {
        config.boxed(path);
    }
    config.compile_fds(descriptors)?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut all = String::new();
    writeln!(all, "/// The method tables of every service in the schema.")?;
    writeln!(
        all,
        "pub const SERVICES: &[&[crate::method::MethodDesc]] = &["
    )?;
    for table in tables.borrow().iter() {
        writeln!(all, "    crate::{table}::METHODS,")?;
    }
    writeln!(all, "];")?;
    std::fs::write(out_dir.join("services.rs"), all)?;
    Ok(())
}

/// Fully qualified paths (`.package.Message.field`) of every non-repeated field whose type is
/// one of `types`, in nested messages too.
fn singular_fields_of_type(
    descriptors: &prost_types::FileDescriptorSet,
    types: &[&str],
) -> Vec<String> {
    fn walk(
        prefix: &str,
        message: &prost_types::DescriptorProto,
        types: &[&str],
        out: &mut Vec<String>,
    ) {
        let path = format!("{prefix}.{}", message.name());
        for field in &message.field {
            let repeated = field.label() == prost_types::field_descriptor_proto::Label::Repeated;
            if !repeated && types.contains(&field.type_name()) {
                out.push(format!("{path}.{}", field.name()));
            }
        }
        for nested in &message.nested_type {
            walk(&path, nested, types, out);
        }
    }
    let mut out = Vec::new();
    for file in &descriptors.file {
        let prefix = format!(".{}", file.package());
        for message in &file.message_type {
            walk(&prefix, message, types, &mut out);
        }
    }
    out
}

/// Emits one module per service holding a typed `Method` constant per rpc and a `METHODS` list.
struct MethodTableGenerator {
    /// Paths (from the crate root) of every generated service module.
    tables: Rc<RefCell<Vec<String>>>,
}

impl ServiceGenerator for MethodTableGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let module = snake_case(&service.name);
        let package_path = service.package.replace('.', "::");
        self.tables
            .borrow_mut()
            .push(format!("{package_path}::{module}"));
        let full_service = format!("{}.{}", service.package, service.proto_name);
        let _ = writeln!(buf, "/// Method table of the `{full_service}` service.");
        let _ = writeln!(buf, "pub mod {module} {{");
        let mut names = Vec::new();
        for method in &service.methods {
            let kind = match (method.client_streaming, method.server_streaming) {
                (false, false) => "Unary",
                (false, true) => "ServerStreaming",
                (true, false) => "ClientStreaming",
                (true, true) => "BidiStreaming",
            };
            let constant = method.name.to_uppercase();
            for line in &method.comments.leading {
                let _ = writeln!(buf, "    ///{line}");
            }
            if method.comments.leading.is_empty() {
                let _ = writeln!(buf, "    /// The `{}` rpc.", method.proto_name);
            }
            let _ = writeln!(
                buf,
                "    pub const {constant}: crate::method::Method<super::{req}, super::{resp}> = \
                 crate::method::Method::new(crate::method::MethodDesc {{ \
                 path: \"/{full_service}/{name}\", service: \"{full_service}\", name: \"{name}\", \
                 kind: crate::method::MethodKind::{kind}, request: \"{req_proto}\", response: \"{resp_proto}\" }});",
                req = method.input_type,
                resp = method.output_type,
                name = method.proto_name,
                req_proto = method.input_proto_type.trim_start_matches('.'),
                resp_proto = method.output_proto_type.trim_start_matches('.'),
            );
            names.push(constant);
        }
        let _ = writeln!(buf, "    /// Every method of the service, in schema order.");
        let _ = writeln!(
            buf,
            "    pub const METHODS: &[crate::method::MethodDesc] = &[{}];",
            names
                .iter()
                .map(|n| format!("{n}.desc"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(buf, "}}");
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if i > 0 && (prev_lower || (next_lower && chars[i - 1].is_ascii_uppercase())) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
