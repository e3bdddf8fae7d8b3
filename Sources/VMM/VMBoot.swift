import Boot
import CKVM
import Devices
import KVM
import PVMMABI

extension VM {
    /// Loads the kernel, the ACPI tables and the boot structures into RAM and sets the
    /// boot vCPU's registers: the "boot" half of the build/boot split. Runs on a machine
    /// whose vCPUs are not in KVM_RUN (before `start`, or parked by a reboot).
    func boot() throws(VMMError) {
        let limit = UInt64(config.memoryMiB) << 20
        let image: BootImage
        if let cached = kernelImage { image = cached } else {
            image = try Self.readKernel(config.kernel, limit: limit)
            kernelImage = image
        }
        if initrdImage == nil { initrdImage = try Self.readInitrd(config.initrd, limit: limit) }
        let initrd = initrdImage
        let cmdline = Array(config.kernelCommandLine(msiInterrupts: interruptsAsMSI).utf8)
        let acpi = ACPITables(cpus: config.cpus)
        let booted = image.withBytes { [memory] bytes in
            Result { () throws(BootError) in
                try acpi.write(to: memory)
                guard let initrd else {
                    return try BootBuilder.prepare(kernel: bytes, mem: memory, cmdline: cmdline, rsdp: acpi.rsdp)
                }
                return try initrd.withBytes { (i) throws(BootError) in
                    try BootBuilder.prepare(kernel: bytes, mem: memory, cmdline: cmdline, rsdp: acpi.rsdp, initrd: i)
                }
            }
        }
        let loaded: LoadedKernel, cpuState: InitialCPUState
        switch booted {
        case .success(let b): (loaded, cpuState) = b
        case .failure(let e):
            // The initrd's size is the user's choice, like the memory: name the field.
            if case .initrdDoesNotFit = e, let path = config.initrd {
                throw .invalidConfig(ConfigError(field: "initrd", message: "\(path): \(e)"))
            }
            throw .badKernel(path: config.kernel, error: e)
        }
        kernel = loaded
        do throws(KVMError) {
            let bsp = vcpus[0]
            try Self.setInitialState(bsp.vcpu, cpuState)
            if flavour == .pvm && loaded.entryKind == .pvmm64 {
                // Register the VIF page before the first KVM_RUN so the guest never
                // runs emulated (host-kvm.md: "How a vCPU goes native").
                let value = BootLayout.vif | PVM.vifModeValid | PVM.vifPublishCR2
                guard try bsp.vcpu.setMSR(PVM.msrVIF, value) else {
                    throw KVMError("register VIF page", .invalidArgument)
                }
            }
        } catch { throw .kvm(error) }
    }

    /// Puts the machine back to power-on: RAM zeroed (and returned to the host), the
    /// irqchip, every vCPU and every device as created. Open disks, the console ring,
    /// eventfds and threads stay. Callers have parked the vCPUs and quiesced the devices.
    func resetMachine() throws(VMMError) {
        memory.discardAll()
        do throws(KVMError) {
            try vm.setIRQChipState(powerOnIRQChips)
            for ctx in vcpus { try ctx.vcpu.restoreState(ctx.powerOn) }
        } catch { throw .kvm(error) }
        // After the irqchip: the cached line levels must match its (low) inputs.
        serial.reset()
        sysctl.reset()
        for d in virtioDevices { d.device.resetDevice() }
    }
}
