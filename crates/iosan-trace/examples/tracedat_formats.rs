//! Prints the format files of a trace.dat as the reader parsed them:
//! `cargo run -p iosan-trace --example tracedat_formats -- FILE [SYSTEM:NAME]`.

use iosan_trace::source::tracedat::TraceDat;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: tracedat_formats FILE [SYSTEM:NAME]")?;
    let only = args.next();
    let t = TraceDat::open(std::io::BufReader::new(std::fs::File::open(path)?))?;
    let td = t.tracing_data();
    println!(
        "header_page {:?}; {} formats ({} bad), {} symbols, {} cmdlines",
        td.header_page,
        td.formats.all().len(),
        td.bad_formats,
        td.kallsyms.len(),
        td.cmdlines.len()
    );
    for f in td.formats.all() {
        let name = format!("{}:{}", f.system, f.name);
        if only.as_ref().is_some_and(|o| *o != name) {
            continue;
        }
        println!("{name} id {}", f.id);
        for x in &f.fields {
            println!(
                "  {:<28} {:<24} off {:>3} size {:>3} signed {} {:?}",
                x.name,
                x.type_name,
                x.offset,
                x.size,
                u8::from(x.signed),
                x.kind
            );
        }
    }
    Ok(())
}
