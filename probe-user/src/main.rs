fn main() {
    let path = std::env::args().nth(1).unwrap();
    match probe_user::resolve::resolve(std::path::Path::new(&path)) {
        Ok(plan) => {
            println!("naming {:?} dwarf {} layout {:?}", plan.naming, plan.has_dwarf, plan.layout);
            for t in &plan.task_types { println!("type {}", t.name); }
            for s in &plan.sites { if s.task_type.is_none() { println!("site {:?} {:#x} off {:#x}", s.kind, s.address, s.file_offset); } }
            for n in &plan.notes { println!("note {n}"); }
        }
        Err(e) => println!("error: {e}"),
    }
}
