import Testing
import VMControl

@Suite struct LifecycleMachineTests {
    @Test func bootPauseResumeStop() {
        var m = LifecycleMachine()
        #expect(m.state == .created)
        #expect(throws: LifecycleConflict.self) { try m.check(.pause) }
        do { let ok = m.enter(.starting) && m.enter(.running); #expect(ok) }
        #expect(throws: Never.self) { try m.check(.pause) }
        do { let ok = m.enter(.paused); #expect(ok) }
        #expect(throws: LifecycleConflict(operation: .pause, state: .paused)) { try m.check(.pause) }
        #expect(throws: Never.self) { try m.check(.resume) }
        do { let ok = m.enter(.running); #expect(ok) }
        do { let ok = m.enter(.stopping); #expect(ok) }
        // A second stop changes nothing and is not an error; pause and reboot are.
        #expect(throws: Never.self) { try m.check(.stop) }
        #expect(throws: LifecycleConflict.self) { try m.check(.pause) }
        #expect(throws: LifecycleConflict.self) { try m.check(.reboot) }
        do { let ok = m.enter(.stopped); #expect(ok) }
        #expect(m.state.isFinal)
    }

    @Test func finalStatesAllowNothing() {
        for final in [VMState.stopped, .crashed] {
            var m = LifecycleMachine()
            do { let ok = m.enter(final); #expect(ok) }
            for op in LifecycleOperation.allCases {
                #expect(throws: LifecycleConflict.self) { try m.check(op) }
            }
            for next in VMState.allCases { do { let ok = !m.enter(next); #expect(ok, "\(final) -> \(next)") } }
        }
    }

    @Test func rebootGoesThroughStarting() {
        var m = LifecycleMachine()
        _ = m.enter(.starting); _ = m.enter(.running)
        #expect(throws: Never.self) { try m.check(.reboot) }
        do { let ok = m.enter(.starting) && m.enter(.running); #expect(ok) }
        _ = m.enter(.paused)
        #expect(throws: Never.self) { try m.check(.reboot) }
        do { let ok = m.enter(.starting); #expect(ok) }
    }

    @Test func edgesThatDoNotExist() {
        #expect(!LifecycleMachine.allows(from: .created, to: .running))
        #expect(!LifecycleMachine.allows(from: .created, to: .paused))
        #expect(!LifecycleMachine.allows(from: .stopping, to: .running))
        #expect(!LifecycleMachine.allows(from: .stopping, to: .stopping))
        #expect(!LifecycleMachine.allows(from: .paused, to: .paused))
        #expect(LifecycleMachine.allows(from: .created, to: .crashed))
        #expect(LifecycleMachine.allows(from: .paused, to: .stopping))
    }

    @Test func killIsAllowedUntilTheEnd() {
        var m = LifecycleMachine()
        for s in [VMState.starting, .running, .paused, .stopping] {
            #expect(throws: Never.self) { try m.check(.kill) }
            _ = m.enter(s)
        }
        _ = m.enter(.stopped)
        #expect(throws: LifecycleConflict.self) { try m.check(.kill) }
    }
}
